// Runs analytics.js (@segment/analytics-next's own browser bundle, served from this machine: no
// CDN) in headless Chromium (Debian's, driven by playwright-core) on a test page that calls
// page(), track(), identify(), group() and alias(), and reports what happened.
// Driven by tests/test_e2e_js_trackers.py.
//
// stdin: {"chromium", "apiHost" (host:port/v1 of the collector), "writeKey", "delivery"
//         ("standard" | "batching"), "calls": [{"label", "method", "args"}]}
// stdout: one JSON object: {"calls": [{"label", "messageId", "type"}], "requests": [{"url",
//          "method", "status", "body"}], "console": [...], "pageErrors": [...], "offsite": [...]}
import { createServer } from 'node:http'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, normalize } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'

const input = JSON.parse(await new Promise((resolve) => {
  let text = ''
  process.stdin.setEncoding('utf8')
  process.stdin.on('data', (chunk) => { text += chunk })
  process.stdin.on('end', () => resolve(text))
}))
const bundles = fileURLToPath(new URL('node_modules/@segment/analytics-next/dist/umd/', import.meta.url))

// The page runs the calls in order and records each call's messageId (analytics.js makes them).
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>Acme Shop – test page</title>
<script src="/analytics-next/bundles/index.js"></script></head>
<body><h1>Acme Shop</h1><script>
window.results = null
;(async () => {
  const input = ${JSON.stringify(input)}
  const segment = { apiHost: input.apiHost, protocol: 'http' }
  if (input.delivery === 'batching') segment.deliveryStrategy = { strategy: 'batching', config: { size: 3, timeout: 300 } }
  const [analytics] = await AnalyticsNext.AnalyticsBrowser.load(
    { writeKey: input.writeKey, cdnURL: location.origin },
    { integrations: { 'Segment.io': segment }, retryQueue: false }
  )
  const calls = []
  for (const { label, method, args } of input.calls) {
    const ctx = await analytics[method](...args)
    calls.push({ label, messageId: ctx.event.messageId, type: ctx.event.type })
  }
  window.results = calls
})().catch((err) => { window.results = { error: String(err && err.stack || err) } })
</script></body></html>`

// The page's own origin: the page, the analytics.js bundles, the project's CDN settings.
const server = createServer(async (req, res) => {
  const url = new URL(req.url, 'http://localhost')
  try {
    if (url.pathname === '/' || url.pathname === '/index.html') {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' }).end(PAGE)
    } else if (url.pathname === `/v1/projects/${input.writeKey}/settings`) {
      const settings = { integrations: { 'Segment.io': { apiKey: input.writeKey, apiHost: input.apiHost, protocol: 'http' } }, plan: {} }
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(settings))
    } else if (url.pathname.startsWith('/analytics-next/bundles/')) {
      const name = normalize(url.pathname.slice('/analytics-next/bundles/'.length))
      if (name.includes('..') || name.includes('/')) throw new Error('bad path')
      res.writeHead(200, { 'Content-Type': 'text/javascript' }).end(await readFile(join(bundles, name)))
    } else {
      res.writeHead(404).end()
    }
  } catch {
    res.writeHead(404).end()
  }
})
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
const origin = `http://127.0.0.1:${server.address().port}`

const profile = await mkdtemp(join(tmpdir(), 'tw-chromium-'))
const context = await chromium.launchPersistentContext(profile, {
  executablePath: input.chromium,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync']
})
const report = { calls: null, requests: [], console: [], pageErrors: [], offsite: [] }
try {
  const page = context.pages()[0] ?? await context.newPage()
  page.on('console', (msg) => report.console.push(`${msg.type()}: ${msg.text()}`))
  page.on('pageerror', (err) => report.pageErrors.push(String(err)))
  // nothing may leave this machine (no CDN): any other host is refused and reported
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url())
    if (url.hostname === '127.0.0.1') return route.continue()
    report.offsite.push(url.href)
    return route.abort()
  })
  page.on('requestfinished', async (request) => {
    if (!request.url().startsWith(`http://${input.apiHost}`)) return
    const response = await request.response()
    let body = null
    try { body = await response.json() } catch { /* a preflight has no body */ }
    report.requests.push({ url: request.url(), method: request.method(), status: response.status(), body, sent: request.postData() })
  })
  page.on('requestfailed', (request) => {
    report.requests.push({ url: request.url(), method: request.method(), status: null, failure: request.failure()?.errorText })
  })
  await page.goto(`${origin}/index.html`)
  await page.waitForFunction(() => window.results !== null, null, { timeout: 30000 })
  report.calls = await page.evaluate(() => window.results)
  // every request to the collector answered before the page goes away
  const started = Date.now()
  const expected = input.delivery === 'batching' ? 1 : (report.calls.length || 1)
  while (report.requests.filter((r) => r.method === 'POST').length < expected && Date.now() - started < 10000) {
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  await new Promise((resolve) => setTimeout(resolve, input.delivery === 'batching' ? 1500 : 300))
} finally {
  await context.close()
  server.close()
  await rm(profile, { recursive: true, force: true })
}
process.stdout.write(JSON.stringify(report))
