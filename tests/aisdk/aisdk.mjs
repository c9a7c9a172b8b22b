// Runs the Vercel AI SDK's own message functions for the worker's tests, in every major
// version the worker accepts (package.json's `ai5`, `ai6`, `ai7` aliases).
//
// stdin: a JSON list of requests {"op", "messages"}, op one of
//   "convert"         convertToModelMessages(messages): UI messages -> model messages
//   "validate-ui"     validateUIMessages({messages})
//   "validate-model"  modelMessageSchema.parse(each message)
// stdout: a JSON list, one {"<alias>": {"ok": true, "messages"?} | {"ok": false, "error"}}
// per request, with {"versions": {"<alias>": "<ai version>"}} as the last element.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const ALIASES = ['ai5', 'ai6', 'ai7'];
const sdks = Object.fromEntries(
  await Promise.all(ALIASES.map(async (alias) => [alias, await import(alias)])),
);
const versions = Object.fromEntries(
  ALIASES.map((alias) => [alias, require(`${alias}/package.json`).version]),
);

async function run(ai, op, messages) {
  if (op === 'convert') return await ai.convertToModelMessages(messages);
  if (op === 'validate-ui') return await ai.validateUIMessages({ messages });
  if (op === 'validate-model') return messages.map((m) => ai.modelMessageSchema.parse(m));
  throw new Error(`unknown op ${op}`);
}

const requests = JSON.parse(readFileSync(0, 'utf8'));
const answers = [];
for (const { op, messages } of requests) {
  const answer = {};
  for (const alias of ALIASES) {
    try {
      const result = await run(sdks[alias], op, messages);
      // A JSON round trip turns URL objects into strings, as the app's database would.
      answer[alias] = { ok: true, messages: JSON.parse(JSON.stringify(result)) };
    } catch (error) {
      answer[alias] = { ok: false, error: String(error?.message ?? error).slice(0, 2000) };
    }
  }
  answers.push(answer);
}
answers.push({ versions });
process.stdout.write(JSON.stringify(answers));
