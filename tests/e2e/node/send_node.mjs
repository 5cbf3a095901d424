// Sends calls through the real @segment/analytics-node SDK, as a Node.js server would, and
// reports what the SDK saw. Driven by tests/test_e2e_js_trackers.py.
//
// stdin: {"host", "writeKey", "options": {...Analytics settings}, "calls": [{"method", "params"}]}
// stdout: one JSON object: {"callbacks": [{"index", "error"}], "errors": [emitted 'error' events],
//          "requests": [{"url", "calls", "sizes"}], "responses": [{"status", "body"}]}
import { Analytics, FetchHTTPClient } from '@segment/analytics-node'

const input = JSON.parse(await new Promise((resolve) => {
  let text = ''
  process.stdin.setEncoding('utf8')
  process.stdin.on('data', (chunk) => { text += chunk })
  process.stdin.on('end', () => resolve(text))
}))

// The SDK's own fetch client; only the response body is kept for the report (the SDK itself
// reads status and status text only).
const responses = []
class RecordingClient extends FetchHTTPClient {
  async makeRequest (options) {
    const response = await super.makeRequest(options)
    const body = await response.clone().text()
    let parsed = body
    try { parsed = JSON.parse(body) } catch { /* not JSON: kept as text */ }
    responses.push({ status: response.status, body: parsed })
    return response
  }
}

const analytics = new Analytics({
  writeKey: input.writeKey,
  host: input.host,
  httpClient: new RecordingClient(),
  ...input.options
})
const report = { callbacks: [], errors: [], requests: [], responses }
analytics.on('error', (err) => {
  report.errors.push({ code: err.code, reason: String(err.reason?.message ?? err.reason) })
})
analytics.on('http_request', (req) => {
  const batch = JSON.parse(req.body).batch
  report.requests.push({
    url: req.url,
    calls: batch.length,
    // each call's size as sent (UTF-8 bytes of its JSON), by messageId
    sizes: Object.fromEntries(batch.map((c) => [c.messageId, Buffer.byteLength(JSON.stringify(c))]))
  })
})

const pending = input.calls.map(({ method, params }, index) => new Promise((resolve) => {
  try {
    analytics[method](params, (err) => {
      report.callbacks.push({ index, error: err ? String(err.reason?.message ?? err.message ?? err) : null })
      resolve()
    })
  } catch (err) { // the SDK refuses some calls at once (validation)
    report.callbacks.push({ index, error: String(err.message ?? err) })
    resolve()
  }
}))
await analytics.closeAndFlush({ timeout: 30000 })
await Promise.race([Promise.all(pending), new Promise((resolve) => setTimeout(resolve, 5000))])
report.callbacks.sort((a, b) => a.index - b.index)
process.stdout.write(JSON.stringify(report))
