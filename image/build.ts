/**
 * Builds the E2B template of the sandbox supervisor (definition: image/template.ts).
 *
 *   image/build-binary.sh                      # the static binary the Dockerfile copies
 *   cd image && npm ci
 *   E2B_API_KEY=e2b_... npx tsx build.ts       # or: npm run build
 *
 * Environment:
 *   E2B_API_KEY        required
 *   E2B_TEMPLATE_NAME  template name, optionally name:tag (default: sandbox-supervisor)
 *   E2B_SKIP_CACHE=1   rebuild every layer
 *
 * Sandboxes are then created with Sandbox.create('<name>'); the stack is already running
 * in them (E2B snapshots the VM once the ready command passes).
 */
import fs from 'node:fs'
import path from 'node:path'
import { Template, defaultBuildLogger } from 'e2b'
import { contextDir, template } from './template.js'

const apiKey = process.env.E2B_API_KEY
if (!apiKey) {
  console.error('E2B_API_KEY is not set (https://e2b.dev/dashboard?tab=keys)')
  process.exit(2)
}

const binary = path.join(contextDir, 'target/x86_64-unknown-linux-musl/release/supervisor')
if (!fs.existsSync(binary)) {
  console.error(`${binary} is missing: run image/build-binary.sh first`)
  process.exit(2)
}

const name = process.env.E2B_TEMPLATE_NAME || 'sandbox-supervisor'
const info = await Template.build(template, name, {
  apiKey,
  cpuCount: 2,
  memoryMB: 4096,
  skipCache: process.env.E2B_SKIP_CACHE === '1',
  onBuildLogs: defaultBuildLogger(),
})
console.log(`template ${info.name}: id ${info.templateId}, build ${info.buildId}, tags ${info.tags.join(',') || '-'}`)
