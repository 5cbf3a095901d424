// Opens trackwatch's marketers' page (`trackwatch page`) in headless Chromium (Debian's, driven
// by playwright-core), goes through its three views as a user would, takes a screenshot of
// each and reports what it saw. Driven by tests/test_page_browser.py.
//
// stdin: {"chromium", "url" (the page, with ?token= if any), "shots" (a folder),
//         "explain": {"event", "source", "from", "to"} (UTC, YYYY-MM-DDTHH:MM)}
// stdout: one JSON object: {"anomalies": [text...], "chart": {"observed", "band", "outside"},
//          "funnel": [row text...], "verdict": {"badge", "paragraph", "evidence": [...]},
//          "fromAnomaly": {"badge"}, "console": [...], "pageErrors": [...], "offsite": [...]}
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'

const input = JSON.parse(await new Promise((resolve) => {
  let text = ''
  process.stdin.setEncoding('utf8')
  process.stdin.on('data', (chunk) => { text += chunk })
  process.stdin.on('end', () => resolve(text))
}))

const profile = await mkdtemp(join(tmpdir(), 'tw-page-chromium-'))
const context = await chromium.launchPersistentContext(profile, {
  executablePath: input.chromium,
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync']
})
const report = { console: [], pageErrors: [], offsite: [] }
const origin = new URL(input.url).origin
try {
  const page = context.pages()[0] ?? await context.newPage()
  page.on('console', (msg) => report.console.push(`${msg.type()}: ${msg.text()}`))
  page.on('pageerror', (err) => report.pageErrors.push(String(err)))
  // works offline: any request off the page's own origin is refused and reported
  await context.route('**/*', (route) => {
    const url = route.request().url()
    if (url.startsWith(origin)) return route.continue()
    report.offsite.push(url)
    return route.abort()
  })
  await page.goto(input.url)

  // 1. anomalies
  await page.waitForSelector('#anomaly-list li .meta', { timeout: 20000 })
  report.anomalies = await page.$$eval('#anomaly-list li', (lis) => lis.map((li) => li.textContent))
  await page.screenshot({ path: join(input.shots, 'anomalies.png'), fullPage: true })

  // 2. explorer, opened from the first anomaly's "Chart" button, then the funnel
  await page.click('#anomaly-list li .meta button:text("Chart")')
  await page.waitForSelector('#chart svg polyline.observed', { timeout: 20000 })
  report.chart = await page.evaluate(() => ({
    observed: document.querySelector('#chart polyline.observed').getAttribute('points').split(' ').length,
    band: document.querySelectorAll('#chart polygon.band').length,
    outside: document.querySelectorAll('#chart circle.outside').length,
    event: document.querySelector('#explore-form [name=event]').value
  }))
  await page.click('#funnel-form button')
  await page.waitForSelector('#funnel table tr:nth-child(2)', { timeout: 20000 })
  report.funnel = await page.$$eval('#funnel tr', (rows) => rows.map((r) => r.textContent))
  await page.screenshot({ path: join(input.shots, 'explorer.png'), fullPage: true })

  // 3. explain this period, filled in by hand
  await page.click('nav button[data-view=explain]')
  const e = input.explain
  await page.selectOption('#explain-form [name=event]', e.event)
  await page.selectOption('#explain-form [name=source]', e.source)
  await page.fill('#explain-form [name=from]', e.from)
  await page.fill('#explain-form [name=to]', e.to)
  await page.click('#explain-form button')
  await page.waitForSelector('#verdict .verdict', { timeout: 20000 })
  report.verdict = await page.evaluate(() => ({
    badge: document.querySelector('#verdict .badge').textContent,
    paragraph: document.querySelector('#verdict .paragraph').textContent,
    evidence: Array.from(document.querySelectorAll('#verdict li')).map((li) => li.textContent)
  }))
  await page.screenshot({ path: join(input.shots, 'explain.png'), fullPage: true })

  // 4. "Explain" from an anomaly goes straight to a verdict
  await page.click('nav button[data-view=anomalies]')
  await page.click('#anomaly-list li .meta button:text("Explain")')
  await page.waitForFunction(() => document.querySelector('#verdict .badge') &&
    document.querySelector('#explain').classList.contains('active'), null, { timeout: 20000 })
  report.fromAnomaly = { badge: await page.textContent('#verdict .badge') }
} finally {
  await context.close()
  await rm(profile, { recursive: true, force: true })
}
process.stdout.write(JSON.stringify(report))
