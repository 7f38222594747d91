// Starts a real `countersign serve` for the TS compatibility tests.
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const repo = path.resolve(here, '..', '..', '..')
export const BIN = process.env.COUNTERSIGN_BIN || path.join(repo, 'target', 'debug', 'countersign')

export function createKey(project, dataDir) {
  const res = spawnSync(BIN, ['keys', 'create', '--project', project, '--data-dir', dataDir], {
    encoding: 'utf8',
    timeout: 60_000,
  })
  if (res.error) throw res.error
  if (res.status !== 0) {
    throw new Error(`keys create exited ${res.status}\nstdout:\n${res.stdout}\nstderr:\n${res.stderr}`)
  }
  const lines = res.stdout.split('\n').map(l => l.trim()).filter(Boolean)
  if (lines.length === 0) throw new Error(`keys create printed nothing (stderr: ${res.stderr})`)
  return lines[lines.length - 1]
}

/**
 * Start one server on a fresh data dir. Returns {baseUrl, apiBase, key, stop}.
 * stop() sends SIGTERM and resolves with the exit code.
 */
export async function startServer() {
  if (!existsSync(BIN)) throw new Error(`countersign binary not found at ${BIN} (set COUNTERSIGN_BIN)`)
  const dataDir = mkdtempSync(path.join(tmpdir(), 'countersign-ts-'))
  const key = createKey('compat-ts', dataDir)

  const proc = spawn(BIN, ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stderr = ''
  proc.stderr.setEncoding('utf8')
  proc.stderr.on('data', chunk => {
    stderr = (stderr + chunk).slice(-20_000)
  })
  const exited = new Promise(resolve => proc.on('exit', (code, signal) => resolve({ code, signal })))

  // keep reading stdout for the whole life of the process so the pipe never fills
  const rl = readline.createInterface({ input: proc.stdout })
  const stdoutLines = []
  const baseUrl = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "Listening on" line after 30s; stderr:\n${stderr}`)), 30_000)
    rl.on('line', line => {
      stdoutLines.push(line)
      const m = /Listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(line)
      if (m) {
        clearTimeout(timer)
        resolve(m[1])
      }
    })
    exited.then(({ code, signal }) => {
      clearTimeout(timer)
      reject(new Error(`countersign serve exited early (${code ?? signal}); stderr:\n${stderr}`))
    })
  }).catch(err => {
    proc.kill('SIGKILL')
    rmSync(dataDir, { recursive: true, force: true })
    throw err
  })

  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM')
    let timer
    const timeout = new Promise(resolve => {
      timer = setTimeout(() => resolve({ code: 'timeout' }), 20_000)
    })
    const result = await Promise.race([exited, timeout])
    clearTimeout(timer)
    if (result.code === 'timeout') {
      proc.kill('SIGKILL')
      await exited
    }
    rmSync(dataDir, { recursive: true, force: true })
    return { ...result, stderr, stdoutLines }
  }

  return { baseUrl, apiBase: `${baseUrl}/humanlayer/v1`, key, stop, proc }
}

/** A sleep() for the SDK: 100 ms instead of 3000 ms, throws after maxPolls so a test cannot hang forever. */
export function fastSleep(maxPolls = 200, ms = 100) {
  let polls = 0
  return async () => {
    polls += 1
    if (polls > maxPolls) throw new Error(`still not completed after ${maxPolls} polls`)
    await new Promise(resolve => setTimeout(resolve, ms))
  }
}
