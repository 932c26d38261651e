// The seed's example ("1. User Instruments Their Agent", user-app/agent.ts), line for line.
// The seed elides some of it; every line marked "filled in" is ours, and every line marked
// "seed:" reads the `openai` package's real response shape where the seed's sketch used a
// flatter one (it shows `response.tool_calls`, `toolCall.name`, `response.content`).
// Configuration comes from the environment: BAGULA_API_KEY, BAGULA_ENDPOINT (the seed's
// 'https://api.bagula.ai' otherwise), OPENAI_API_KEY and OPENAI_BASE_URL (read by `openai`).
//
//   node build/examples/seed-agent.js "Where is my order #42?" u-42
import { BagulaClient } from '@bagula/client';
import OpenAI from 'openai';

const bagula = new BagulaClient({
  apiKey: process.env.BAGULA_API_KEY,
  endpoint: process.env.BAGULA_ENDPOINT ?? 'https://api.bagula.ai', // or self-hosted
  batchSize: 50,        // Send every 50 sessions
  flushInterval: 10000, // Or every 10 seconds
});

const openai = new OpenAI(); // filled in
const PRICE_PER_MILLION = { 'gpt-4': { input: 30, output: 60 } }; // filled in: USD per million tokens
function calculateCost(model: string, usage: OpenAI.CompletionUsage): number { // filled in
  const price = PRICE_PER_MILLION[model];
  return (usage.prompt_tokens * price.input + usage.completion_tokens * price.output) / 1_000_000;
}
const ORDERS = { '42': { status: 'shipped', eta: 'tomorrow' } }; // filled in: a stand-in order system
async function executeTool(name: string, args: string) { // filled in
  if (name !== 'search_orders') throw new Error(`unknown tool ${name}`);
  return ORDERS[JSON.parse(args).orderId] ?? { status: 'not found' };
}
const tools: OpenAI.ChatCompletionTool[] = [{ // filled in
  type: 'function',
  function: {
    name: 'search_orders',
    description: 'Look an order up by its number',
    parameters: { type: 'object', properties: { orderId: { type: 'string' } }, required: ['orderId'] },
  },
}];

async function handleCustomerRequest(request: string, userId: string) {
  const tracker = bagula.getSessionTracker();

  // Start tracking this work session
  const sessionId = tracker.startSession(
    'customer-support-agent',
    request,
    { userId, metadata: { channel: 'web' } }
  );

  const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: request }]; // filled in
  let finalResponse: string; // filled in

  // Agent does work...
  let turnCount = 0;
  while (turnCount < 5) {
    turnCount++;
    const toolCalls = []; // filled in

    // Start turn
    const turnId = tracker.startTurn(sessionId, {
      type: 'user_message',
      content: request
    });

    // Call LLM
    const llmStart = Date.now();
    const response = await openai.chat.completions.create({ model: 'gpt-4', messages, tools }); // filled in: {...}
    const llmEnd = Date.now();

    // Track LLM call
    tracker.recordLLMCall(sessionId, turnId, {
      callId: `llm-${turnCount}`,
      provider: 'openai',
      model: 'gpt-4',
      startTime: llmStart,
      endTime: llmEnd,
      messages: [...messages], // filled in: [...]
      response: response.choices[0].message,
      metrics: {
        tokensInput: response.usage.prompt_tokens,
        tokensOutput: response.usage.completion_tokens,
        tokensTotal: response.usage.total_tokens,
        costUsd: calculateCost('gpt-4', response.usage),
        latencyMs: llmEnd - llmStart,
      },
    });
    messages.push(response.choices[0].message); // filled in

    // If tools called, track them
    if (response.choices[0].message.tool_calls) { // seed: response.tool_calls
      for (const toolCall of response.choices[0].message.tool_calls) { // seed: response.tool_calls
        if (toolCall.type !== 'function') continue; // filled in
        const toolStart = Date.now();
        const result = await executeTool(toolCall.function.name, toolCall.function.arguments); // seed: toolCall.name, toolCall.arguments
        const toolEnd = Date.now();

        toolCalls.push({
          toolId: toolCall.id,
          toolName: toolCall.function.name, // seed: toolCall.name
          arguments: toolCall.function.arguments, // seed: toolCall.arguments
          startTime: toolStart,
          endTime: toolEnd,
          result: result,
          latencyMs: toolEnd - toolStart,
        });
        messages.push({ role: 'tool', tool_call_id: toolCall.id, content: JSON.stringify(result) }); // filled in
      }

      tracker.recordAgentResponse(sessionId, turnId, {
        message: response.choices[0].message.content, // seed: response.content
        toolCalls: toolCalls,
      });

      continue; // Next turn
    }

    // Done
    finalResponse = response.choices[0].message.content; // filled in
    break;
  }

  // Complete session
  tracker.completeSession(sessionId, {
    status: 'success',
    result: finalResponse,
    userSatisfaction: 5,
  });

  return finalResponse;
}

// Sessions are automatically batched and sent async to Bagula

// filled in: run it once; the session is sent when the process is about to exit.
handleCustomerRequest(process.argv[2] ?? 'Where is my order #42?', process.argv[3] ?? 'u-42').then((answer) => {
  console.log(answer);
});
