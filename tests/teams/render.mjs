// Renders cards the Teams tests received with Microsoft's adaptivecards SDK in headless Chromium, for
// docs/operations.md's picture (the SDK's default look, not Teams' own theme):
//   node tests/teams/render.mjs target/teams-cards.json docs/teams-cards.png
// target/teams-cards.json is written by tests/fleet/teams.rs (every_kind_of_event_...).
import { createRequire } from 'node:module';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const require = createRequire(resolve('tests/console/package.json'));
const { chromium } = require('playwright-core');
const [cardsFile, out] = process.argv.slice(2);
const cards = JSON.parse(readFileSync(cardsFile, 'utf8'));
const sdk = readFileSync('tests/teams/node_modules/adaptivecards/dist/adaptivecards.min.js', 'utf8');

const profile = mkdtempSync(join(tmpdir(), 'eventfleet-cards-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 760, height: 400 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run'],
});
try {
  const page = await context.newPage();
  await page.setContent(`<html><body style="background:#f5f5f5;font-family:'Segoe UI',sans-serif;margin:16px">
    <div id="cards"></div></body></html>`);
  await page.addScriptTag({ content: sdk });
  await page.evaluate((cards) => {
    const root = document.getElementById('cards');
    for (const json of cards) {
      const card = new AdaptiveCards.AdaptiveCard();
      // Markdown as Teams reads it: bold, links, paragraphs (the SDK leaves it to the host).
      AdaptiveCards.AdaptiveCard.onProcessMarkdown = (text, result) => {
        const esc = text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
        result.outputHtml = esc
          .replace(/\*\*([^*]+)\*\*/g, '<b>$1</b>')
          .replace(/\[([^\]]+)\]\(([^)]+)\)/g, '<a href="$2">$1</a>')
          .split(/\n\n/).join('<br>');
        result.didProcess = true;
      };
      card.parse(json);
      const frame = document.createElement('div');
      frame.style.cssText = 'background:#fff;border-radius:6px;box-shadow:0 1px 3px #0003;margin:0 0 14px;width:700px';
      frame.appendChild(card.render());
      root.appendChild(frame);
    }
  }, cards);
  await page.locator('#cards').screenshot({ path: out });
  console.log(`${cards.length} cards rendered to ${out}`);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
