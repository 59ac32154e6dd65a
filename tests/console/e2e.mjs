// The console in a real browser: Debian's Chromium, headless, driven by playwright-core. tests/console.rs starts
// a fleet with dead letters and a console, then runs this with:
//   CONSOLE_URL      the console's base URL
//   CONSOLE_TOKEN    its token
//   OPERATOR         the name to log in with
//   REPLAY_EVENT_ID  the Slack event_id of a dead-lettered event whose replay will succeed
//   PURGE_EVENT_ID   the Slack event_id of another dead-lettered event, to purge
//   DEAD_REASON      a part of their dead-letter reason
//   SCREENSHOTS      a directory for one screenshot per page (optional)
// Every check throws on failure; the process exits non-zero with the reason.
// After the dead-letter replay, the event is searched in the event log and replayed again to one route.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (tests/console.rs sets it)`);
  return v;
};
const base = need('CONSOLE_URL');
const token = need('CONSOLE_TOKEN');
const operator = need('OPERATOR');
const replayEventId = need('REPLAY_EVENT_ID');
const purgeEventId = need('PURGE_EVENT_ID');
const deadReason = need('DEAD_REASON');
const shots = process.env.SCREENSHOTS;

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

const profile = mkdtempSync(join(tmpdir(), 'eventfleet-console-chromium-'));
// A fresh profile each run: no cookies or cache from an earlier one.
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 860 },
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--disable-quic',
  ],
});
const errors = [];
try {
  const page = context.pages()[0] ?? await context.newPage();
  // The CSP refuses inline script and style: a violation would show here.
  // (The refused login's 401 is expected; any other failed load or CSP violation is not.)
  page.on('console', (m) => { if (m.type() === 'error' && !m.text().includes('status of 401')) errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  const shot = async (name) => { if (shots) await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true }); };

  // Not logged in: sent to the login form.
  await page.goto(`${base}/dlq`);
  check(new URL(page.url()).pathname === '/login', 'a page without a session sends the browser to /login');

  // A wrong token is refused.
  await page.fill('input[name=name]', operator);
  await page.fill('input[name=token]', 'not-the-console-token');
  const [refused] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/login') && r.request().method() === 'POST'),
    page.click('button[type=submit]'),
  ]);
  check(refused.status() === 401, `a wrong token is refused with 401 (got ${refused.status()})`);
  check((await page.textContent('#login-error')).includes('not the console'), 'the login form says the token is wrong');
  await page.goto(`${base}/`);
  check(new URL(page.url()).pathname === '/login', 'a refused login opened no session');
  await shot('login');

  // The right token logs in, under the operator's name.
  await page.fill('input[name=name]', operator);
  await page.fill('input[name=token]', token);
  await Promise.all([page.waitForURL(`${base}/`), page.click('button[type=submit]')]);
  check((await page.textContent('#operator')).trim() === operator, 'logged in: the header names the operator');
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === 'ef_session');
  check(session && session.httpOnly && session.sameSite === 'Strict', 'the session cookie is HttpOnly and SameSite=Strict');

  // Status, refreshing by itself.
  await page.waitForSelector('#queue-dead');
  check(Number(await page.textContent('#queue-dead')) >= 2, 'status shows the dead letters');
  check((await page.textContent('#dlq-by-reason')).includes(deadReason), 'status shows dead letters by reason');
  check((await page.textContent('#top-failing-kinds')).includes('slack.'), 'status shows the top failing kinds');
  const polled = await page.waitForResponse((r) => r.url().endsWith('/status/panel'), { timeout: 15000 });
  check(polled.status() === 200, 'the status panel refreshes by itself');
  await shot('status');

  // A state-changing request without the CSRF token (or with another) is refused, with the session cookie.
  const bare = await page.request.post(`${base}/dlq/purge`, { form: { scope: 'filter', confirm: 'yes' }, maxRedirects: 0 });
  check(bare.status() === 403, `a POST without a CSRF token is refused with 403 (got ${bare.status()})`);
  const forged = await page.request.post(`${base}/dlq/replay`, {
    form: { scope: 'filter', confirm: 'yes', csrf: 'f'.repeat(64) }, maxRedirects: 0,
  });
  check(forged.status() === 403, `a POST with a wrong CSRF token is refused with 403 (got ${forged.status()})`);

  // Find the dead-lettered event by its Slack event_id.
  await page.goto(`${base}/events`);
  await page.fill('input[name=q]', replayEventId);
  await Promise.all([page.waitForURL(/\/events\?q=/), page.press('input[name=q]', 'Enter')]);
  const article = page.locator('article.event');
  check(await article.count() === 1, 'the Slack event_id finds one event');
  const eventId = await article.getAttribute('data-event-id');
  const timeline = await article.locator('table.timeline').textContent();
  check(timeline.includes('dead_lettered') && timeline.includes('received'), 'its timeline shows received … dead_lettered');
  check((await article.textContent()).includes('On the dead-letter queue'), 'it is shown on the dead-letter queue');
  const envelope = await article.locator('pre.body').textContent();
  check(envelope.includes(replayEventId), 'its envelope body is shown');
  check(!envelope.includes('verification-token-not-shown'), "the body's Slack verification token is hidden");
  await shot('events');

  // Dead letters: select the event, preview its replay.
  await page.goto(`${base}/dlq`);
  await shot('dlq');
  await page.check(`tr[data-event-id="${eventId}"] input[name=ids]`);
  await Promise.all([page.waitForURL(`${base}/dlq/preview`), page.click('button[value=selected]:not([formaction])')]);
  check((await page.textContent('#preview-count')).trim() === '1', 'the preview counts one dead letter');
  check((await page.textContent('#preview-order')).includes(eventId), 'the preview lists it in its order');
  check(await page.locator('#preview-groups tbody tr').count() === 1, 'the preview names its group');
  await shot('preview');
  // The confirmation is required: the browser will not submit without it, nor will the console act on it.
  const csrf = await page.inputValue('input[name=csrf]');
  const unconfirmed = await page.request.post(`${base}/dlq/replay`, { form: { csrf, scope: 'filter' }, maxRedirects: 0 });
  check(unconfirmed.status() === 400, `a replay without its confirmation is refused with 400 (got ${unconfirmed.status()})`);
  await page.fill('input[name=rate]', '5');
  await page.check('input[name=confirm]');
  await Promise.all([page.waitForURL(/\/dlq\/replays\/\d+$/), page.click('#confirm-replay')]);
  // Progress, polled until the event is done.
  const row = page.locator(`#replay-outcomes tr[data-event-id="${eventId}"]`);
  await row.locator('td.latest-step', { hasText: 'succeeded' }).waitFor({ timeout: 90000 });
  check((await row.locator('td.event-status').textContent()).includes('DONE'), 'the replayed event succeeded (DONE)');
  check((await page.textContent('#replay-state')).includes(`${operator} (console)`), 'the replay names its operator');
  await shot('replay');

  // Its trail has the replay, by the operator.
  await page.goto(`${base}/events?q=${encodeURIComponent(replayEventId)}`);
  const replayed = page.locator('table.timeline tr.step.replayed');
  check(await replayed.count() === 1, 'the timeline has one replayed line');
  check((await replayed.locator('td.actor').textContent()).trim() === `${operator} (console)`, 'the replayed line names the operator');
  check(await page.locator('table.timeline tr.step.succeeded').count() === 1, 'the timeline ends succeeded');

  // The event log: search by time, source and outcome, select the event, replay it to the team's route only.
  await page.goto(`${base}/events`);
  await page.fill('#event-filters input[name=since]', '1h');
  await page.selectOption('#event-filters select[name=source]', 'slack');
  await page.selectOption('#event-filters select[name=outcome]', 'succeeded');
  await Promise.all([page.waitForURL(/\/events\?since=/), page.click('#event-filters button[type=submit]')]);
  const hit = page.locator(`#event-results tr[data-event-id="${eventId}"]`);
  check(await hit.count() === 1, 'the search of the event log finds the event by time, source and outcome');
  check((await hit.locator('td.outcome').textContent()).includes('succeeded'), 'the result shows its outcome');
  await shot('event-log');
  await hit.locator('input[name=ids]').check();
  await Promise.all([page.waitForURL(`${base}/events/preview`), page.click('#preview-selected')]);
  check((await page.textContent('#preview-count')).trim() === '1', 'the replay preview counts one event');
  check(await page.locator('#preview-groups tbody tr').count() === 1, 'the replay preview names its group');
  check((await page.textContent('#preview-range')).includes('Received from'), 'the replay preview gives the time range');
  const csrf2 = await page.inputValue('input[name=csrf]');
  const unconfirmed2 = await page.request.post(`${base}/events/replay`, {
    form: { csrf: csrf2, scope: 'selected', ids: eventId, reason: 'x' }, maxRedirects: 0,
  });
  check(unconfirmed2.status() === 400, `an event replay without its confirmation is refused with 400 (got ${unconfirmed2.status()})`);
  await page.selectOption('select[name=to_route]', 'team-bot');
  await page.fill('input[name=reason]', 'backfill the team bot');
  await page.check('input[name=confirm]');
  await shot('event-replay-preview');
  await Promise.all([page.waitForURL(/\/events\/replays\/\d+$/), page.click('#confirm-event-replay')]);
  const replayRow = page.locator(`#event-replay-outcomes tr[data-event-id="${eventId}"]`);
  await replayRow.locator('td.latest-step', { hasText: 'succeeded' }).waitFor({ timeout: 90000 });
  check((await replayRow.locator('td.event-status').textContent()).includes('DONE'), 'the event replayed to the route succeeded (DONE)');
  check((await page.textContent('#event-replay-state')).includes('route team-bot'), 'the progress names the route');
  check((await page.textContent('#event-replay-state')).includes(`${operator} (console)`), 'the progress names the operator');
  await shot('event-replay');

  // Purge asks for confirmation first.
  await page.goto(`${base}/events?q=${encodeURIComponent(purgeEventId)}`);
  const purgeId = await page.locator('article.event').getAttribute('data-event-id');
  await page.goto(`${base}/dlq`);
  await page.check(`tr[data-event-id="${purgeId}"] input[name=ids]`);
  await Promise.all([page.waitForURL(`${base}/dlq/purge`), page.click('button[formaction="/dlq/purge"][value=selected]')]);
  check((await page.textContent('#purge-count')).trim() === '1', 'purge asks to confirm one dead letter');
  await page.goto(`${base}/dlq`);
  check(await page.locator(`tr[data-event-id="${purgeId}"]`).count() === 1, 'nothing is purged before the confirmation');
  await page.check(`tr[data-event-id="${purgeId}"] input[name=ids]`);
  await Promise.all([page.waitForURL(`${base}/dlq/purge`), page.click('button[formaction="/dlq/purge"][value=selected]')]);
  await Promise.all([page.waitForSelector('#purged'), page.click('#confirm-purge')]);
  check((await page.textContent('#purged')).includes('Purged 1'), 'the confirmed purge deletes it');
  await page.goto(`${base}/dlq`);
  check(await page.locator(`tr[data-event-id="${purgeId}"]`).count() === 0, 'it is gone from the DLQ');
  await page.goto(`${base}/events?q=${encodeURIComponent(purgeEventId)}`);
  check(await page.locator('table.timeline tr.step.purged td.actor', { hasText: `${operator} (console)` }).count() === 1,
    'its trail says who purged it');

  // Hooks: create one (its secret shown once), then disable it.
  await page.goto(`${base}/hooks`);
  await page.fill('form.create input[name=name]', 'deploys');
  await page.fill('form.create input[name=channel]', '#deploys');
  await Promise.all([page.waitForSelector('#hook-secret'), page.click('form.create button[type=submit]')]);
  const secret = (await page.textContent('#hook-secret')).trim();
  check(/^[0-9a-f]{64}$/.test(secret), 'the new hook shows its secret');
  const url = (await page.textContent('#hook-url')).trim();
  const hookId = url.split('/').pop();
  await page.goto(`${base}/hooks`);
  check(!(await page.content()).includes(secret), 'the secret is not shown again');
  const hookRow = page.locator(`tr[data-hook-id="${hookId}"]`);
  check((await hookRow.locator('td.state').textContent()).includes('enabled'), 'the hook is listed, enabled');
  await shot('hooks');
  await hookRow.locator('button', { hasText: 'Disable' }).click();
  await page.locator(`tr[data-hook-id="${hookId}"] td.state`, { hasText: 'disabled' }).waitFor();
  check(true, 'the hook is disabled');
  await page.locator(`tr[data-hook-id="${hookId}"] button`, { hasText: 'Enable' }).click();
  await page.locator(`tr[data-hook-id="${hookId}"] td.state`, { hasText: 'enabled' }).waitFor();
  check(true, 'and enabled again');
  check((await hookRow.locator('td.messages').textContent()).includes('living'), 'GitHub runs post as living messages');
  await hookRow.locator('td.messages button', { hasText: 'One per delivery' }).click();
  await page.locator(`tr[data-hook-id="${hookId}"] td.messages button`, { hasText: 'Make living' }).waitFor();
  check(true, 'the hook is switched to a message per delivery');

  check(errors.length === 0, `no script or CSP errors in the browser (${errors.join('; ')})`);
  console.log(`EVENT_ID=${eventId} PURGED_EVENT_ID=${purgeId} HOOK_ID=${hookId}`);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
