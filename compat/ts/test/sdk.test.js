// The released @humanlayer/sdk@0.7.9 against a real countersign server (node --test).
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { humanlayer } from '@humanlayer/sdk'
import { fastSleep, startServer } from '../lib/server.js'

let server

before(async () => {
  server = await startServer()
  // the SDK constructor reads these, exactly as in a user's agent
  process.env.HUMANLAYER_API_BASE = server.apiBase
  process.env.HUMANLAYER_API_KEY = server.key
})

after(async () => {
  if (!server) return
  const { code, signal, stderr } = await server.stop()
  assert.equal(code, 0, `countersign serve exited ${code ?? signal} after SIGTERM\n${stderr}`)
})

const uid = () => randomUUID().slice(0, 8)

function makeHl(id, extra = {}) {
  return humanlayer({ runId: `ts-run-${id}`, genid: prefix => `${prefix}-${id}`, sleep: fastSleep(), ...extra })
}

async function until(fn, what, timeoutMs = 15_000) {
  const end = Date.now() + timeoutMs
  for (;;) {
    try {
      return await fn()
    } catch (e) {
      if (Date.now() > end) throw new Error(`${what}: ${e}`)
      await new Promise(r => setTimeout(r, 50))
    }
  }
}

/** Play the human for a function call through hl.backend.functions().respond once the call exists. */
async function decide(hl, callId, status) {
  await until(() => hl.getFunctionCall(callId), `function call ${callId} never appeared`)
  await new Promise(r => setTimeout(r, 150))
  return hl.backend.functions().respond(callId, status)
}

async function answer(hl, callId, status) {
  await until(() => hl.getHumanContact(callId), `human contact ${callId} never appeared`)
  await new Promise(r => setTimeout(r, 150))
  return hl.backend.contacts().respond(callId, status)
}

async function rawGet(path) {
  const resp = await fetch(`${server.apiBase}${path}`, { headers: { Authorization: `Bearer ${server.key}` } })
  assert.equal(resp.status, 200, `GET ${path} -> ${resp.status}`)
  assert.match(resp.headers.get('content-type') ?? '', /^application\/json/)
  return resp.json()
}

test('requireApproval: approved runs the function and returns its value', async () => {
  const id = uid()
  const hl = makeHl(id)
  const ran = []
  const multiply = hl.requireApproval()(function multiply({ x, y }) {
    ran.push([x, y])
    return x * y
  })
  assert.equal(multiply.name, 'multiply')

  const [result, decided] = await Promise.all([
    multiply({ x: 2, y: 5 }),
    decide(hl, `call-${id}`, { approved: true, comment: 'ok' }),
  ])
  assert.equal(result, 10)
  assert.deepEqual(ran, [[2, 5]])
  assert.equal(decided.call_id, `call-${id}`)
  assert.equal(decided.status.approved, true)

  const got = await rawGet(`/function_calls/call-${id}`)
  assert.equal(got.run_id, `ts-run-${id}`)
  assert.equal(got.spec.fn, 'multiply')
  assert.deepEqual(got.spec.kwargs, { x: 2, y: 5 })
  assert.equal(got.status.approved, true)
  assert.equal(got.status.comment, 'ok')
  assert.equal(got.status.user_info.channel, 'api')
})

test('requireApproval: rejection returns the exact denial string', async () => {
  const id = uid()
  const hl = makeHl(id)
  const ran = []
  const multiply = hl.requireApproval()(function multiply({ x, y }) {
    ran.push([x, y])
    return x * y
  })
  const [result] = await Promise.all([
    multiply({ x: 3, y: 4 }),
    decide(hl, `call-${id}`, { approved: false, comment: 'nope' }),
  ])
  assert.equal(result, 'User denied function multiply with comment: nope')
  assert.deepEqual(ran, [])
})

test('requireApproval: rejection without a comment is stored as an empty string', async () => {
  const id = uid()
  const hl = makeHl(id)
  const multiply = hl.requireApproval()(function multiply({ x, y }) {
    return x * y
  })
  const [result] = await Promise.all([multiply({ x: 1, y: 1 }), decide(hl, `call-${id}`, { approved: false })])
  assert.equal(result, 'User denied function multiply with comment: ')
})

test('requireApproval with a Slack channel and an agent name containing spaces', async () => {
  const id = uid()
  // TS run ids are not slugified: "My Agent-<id>"
  const hl = humanlayer({
    agentName: 'My Agent',
    genid: prefix => `${prefix}-${id}`,
    sleep: fastSleep(),
    contactChannel: { slack: { channel_or_user_id: 'C123', context_about_channel_or_user: 'the ops channel' } },
  })
  assert.equal(hl.runId, `My Agent-${id}`)
  const double = hl.requireApproval()(function double({ n }) {
    return n * 2
  })
  const [result] = await Promise.all([double({ n: 21 }), decide(hl, `call-${id}`, { approved: true })])
  assert.equal(result, 42)
  const got = await rawGet(`/function_calls/call-${id}`)
  assert.equal(got.run_id, `My Agent-${id}`)
  assert.deepEqual(got.spec.channel.slack, { channel_or_user_id: 'C123', context_about_channel_or_user: 'the ops channel' })
})

test('humanAsTool returns the human answer', async () => {
  const id = uid()
  const hl = makeHl(id)
  const tool = hl.humanAsTool()
  const [result, answered] = await Promise.all([
    tool({ message: 'which color?' }),
    answer(hl, `human_call-${id}`, { response: 'blue' }),
  ])
  assert.equal(result, 'blue')
  assert.equal(answered.call_id, `human_call-${id}`)
  assert.equal(answered.status.response, 'blue')
  const got = await rawGet(`/contact_requests/human_call-${id}`)
  assert.equal(got.spec.msg, 'which color?')
  assert.equal(got.status.response, 'blue')
})

test('fetchHumanApproval returns the decided status', async () => {
  const id = uid()
  const hl = makeHl(id)
  const [status] = await Promise.all([
    hl.fetchHumanApproval({ spec: { fn: 'deploy', kwargs: { env: 'prod' } } }),
    decide(hl, `call-${id}`, { approved: false, comment: 'not today' }),
  ])
  assert.equal(status.approved, false)
  assert.equal(status.comment, 'not today')
})

test('backend.functions().respond: returns the updated call, second respond is a 409', async () => {
  const id = uid()
  const hl = makeHl(id)
  const created = await hl.createFunctionCall({ spec: { fn: 'transfer', kwargs: { amount: 5 }, state: { a: [1, 2] } } })
  assert.equal(created.call_id, `call-${id}`)
  assert.deepEqual(created.spec.state, { a: [1, 2] })
  const pending = await hl.getFunctionCall(`call-${id}`)
  assert.equal(pending.status.approved, null)

  const decided = await hl.backend.functions().respond(`call-${id}`, { approved: false, comment: 'too much' })
  assert.equal(decided.status.approved, false)
  assert.equal(decided.status.comment, 'too much')
  assert.ok(decided.status.responded_at)

  await assert.rejects(
    hl.backend.functions().respond(`call-${id}`, { approved: true }),
    err => {
      assert.match(err.message, new RegExp(`^POST /agent/function_calls/call-${id}/respond 409: `))
      // the body is JSON
      JSON.parse(err.message.slice(err.message.indexOf(': ') + 2))
      return true
    },
  )
  const after = await hl.getFunctionCall(`call-${id}`)
  assert.equal(after.status.approved, false)
  assert.equal(after.status.comment, 'too much')
})

test('backend.contacts().respond: returns the updated contact, second respond is a 409', async () => {
  const id = uid()
  const hl = makeHl(id)
  const created = await hl.createHumanContact({ spec: { msg: 'hello?' } })
  assert.equal(created.call_id, `human_call-${id}`)
  const pending = await hl.getHumanContact(`human_call-${id}`)
  assert.equal(pending.status.response, null)

  await assert.rejects(hl.backend.contacts().respond(`human_call-${id}`, { response: '' }), /respond 400: /)

  const answered = await hl.backend.contacts().respond(`human_call-${id}`, { response: 'hi there' })
  assert.equal(answered.status.response, 'hi there')
  assert.ok(answered.status.responded_at)

  await assert.rejects(hl.backend.contacts().respond(`human_call-${id}`, { response: 'again' }), /respond 409: /)
  assert.equal((await hl.getHumanContact(`human_call-${id}`)).status.response, 'hi there')
})

test('fetchHumanResponse returns the answer string', async () => {
  const id = uid()
  const hl = makeHl(id)
  const [result] = await Promise.all([
    hl.fetchHumanResponse({ spec: { msg: 'what is 6*7?' } }),
    answer(hl, `human_call-${id}`, { response: '42' }),
  ])
  assert.equal(result, '42')
})

test('escalateEmailFunctionCall records the escalation', async () => {
  const id = uid()
  const hl = makeHl(id)
  await hl.createFunctionCall({ spec: { fn: 'f', kwargs: {}, channel: { email: { address: 'a@example.com' } } } })
  const returned = await hl.escalateEmailFunctionCall(`call-${id}`, {
    escalation_msg: 'urgent',
    additional_recipients: [{ address: 'b@example.com', field: 'cc' }],
  })
  assert.equal(returned.call_id, `call-${id}`)
  const got = await rawGet(`/function_calls/call-${id}`)
  assert.equal(got.escalations.length, 1)
  assert.equal(got.escalations[0].escalation_msg, 'urgent')
  assert.equal(got.escalations[0].additional_recipients[0].address, 'b@example.com')
  assert.ok(got.escalations[0].escalated_at)

  const contact = await hl.createHumanContact({ spec: { msg: 'q', channel: { email: { address: 'a@example.com' } } } })
  const esc = await hl.escalateEmailHumanContact(contact.call_id, { escalation_msg: 'ping' })
  assert.equal(esc.call_id, contact.call_id)
  assert.equal((await rawGet(`/contact_requests/${contact.call_id}`)).escalations[0].escalation_msg, 'ping')
})

test('errors surface as HumanLayerException with a JSON body', async () => {
  const id = uid()
  const hl = makeHl(id)
  await assert.rejects(hl.getFunctionCall(`missing-${id}`), err => {
    assert.match(err.message, new RegExp(`^GET /function_calls/missing-${id} 404: `))
    const body = JSON.parse(err.message.slice(err.message.indexOf(': ') + 2))
    assert.equal(typeof body.error.code, 'string')
    assert.equal(typeof body.error.message, 'string')
    return true
  })
  const bad = humanlayer({ apiKey: 'cs_wrong_key', genid: p => `${p}-${id}`, sleep: fastSleep() })
  await assert.rejects(bad.createFunctionCall({ spec: { fn: 'f', kwargs: {} } }), /POST \/function_calls 401: /)
})
