// Validates Adaptive Cards with Microsoft's adaptivecards SDK (the parser Teams' web client is built on): reads a
// JSON array of cards (each an attachment's `content`) on stdin, prints one line per problem, exits 1 if any.
// What the SDK reports: unknown element or action types, invalid property values, unsupported versions, missing
// required properties, duplicate ids.
const AC = require("adaptivecards/dist/adaptivecards.min.js");

const input = require("fs").readFileSync(0, "utf8");
const cards = JSON.parse(input);
const problems = [];
cards.forEach((json, index) => {
  const where = `card ${index}`;
  if (json.type !== "AdaptiveCard") problems.push(`${where}: type is ${JSON.stringify(json.type)}`);
  const version = AC.Version.parse(json.version, new AC.SerializationContext());
  if (!version || !version.isValid) problems.push(`${where}: version ${JSON.stringify(json.version)} is not valid`);
  const context = new AC.SerializationContext();
  const card = new AC.AdaptiveCard();
  card.parse(json, context);
  for (let i = 0; i < context.eventCount; i++) {
    const event = context.getEventAt(i);
    problems.push(`${where}: ${event.message}`);
  }
  for (const event of card.validateProperties().validationEvents) {
    problems.push(`${where}: ${event.message}`);
  }
  // What the SDK read back must be what was sent: an element or property it does not know would be missing.
  const elements = (body) => (body || []).length;
  if (elements(card.toJSON().body) !== elements(json.body)) {
    problems.push(`${where}: the SDK read ${elements(card.toJSON().body)} of its ${elements(json.body)} elements`);
  }
});
for (const problem of problems) console.log(problem);
console.error(`${cards.length} cards, ${problems.length} problems`);
process.exit(problems.length ? 1 : 0);
