/**
 * The E2B template of the sandbox supervisor (v2 Template SDK): image/Dockerfile, built with
 * the repository root as the file context, and the supervisor as the start command.
 * Built by image/build.ts; checked offline by tests/tests/image.rs.
 */
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Template } from 'e2b'

const here = path.dirname(fileURLToPath(import.meta.url))

/** The build context: the repository root, which every COPY source in the Dockerfile is relative to. */
export const contextDir = path.resolve(here, '..')

/**
 * E2B runs the start and ready commands as the template's default user (`user`, which E2B
 * gives passwordless sudo). The supervisor must be root: it drops every service to `user`
 * itself (opt/supervisor.toml, service_user) and installs the port guard's firewall rules.
 * The config is named explicitly so a missing file fails loudly instead of falling back to
 * the embedded default.
 */
export const startCmd = 'sudo /usr/local/bin/supervisor run --config /opt/supervisor/supervisor.toml'

/**
 * Exit 0 once every required service is ready (the control socket is root-only, hence sudo).
 * E2B reruns the ready command every 2 s until it succeeds (10 min at most), then snapshots
 * the VM with the stack running.
 */
export const readyCmd = 'sudo /usr/local/bin/supervisor ready --timeout 120'

export const template = Template({
  fileContextPath: contextDir,
  // E2B reads only <context>/.dockerignore; these mirror image/Dockerfile.dockerignore (glob
  // syntax: a directory and everything under it). target/ needs no entry: the only COPY from
  // it names the static binary itself.
  fileIgnorePatterns: [
    '**/node_modules', '**/node_modules/**', '.git', '.git/**',
    'app-template/.env', 'app-template/.env.*', 'app-template/dist', 'app-template/dist/**',
  ],
})
  .fromDockerfile(path.join(here, 'Dockerfile'))
  .setStartCmd(startCmd, readyCmd)
