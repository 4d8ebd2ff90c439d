// Installing the server package, pure: which wheel the extension carries, the pip command that
// installs it, whether the running server's version matches the extension's, and what a failed
// pip run means. The .vsix carries the wheel of its own version (bundled/, built by
// `npm run package`), so nothing is ever resolved by name from a package index.

import { quoteArg } from './settings';

export const PACKAGE = 'sigmaloop';

/** A PEP 440-ish normal form for comparing versions: no leading "v", lower case, trailing ".0"s dropped. */
export function normalizeVersion(v: string): string {
  let s = v.trim().toLowerCase().replace(/^v/, '').replace(/[-_]/g, '.');
  while (/\.0$/.test(s) && s.split('.').length > 1) {
    s = s.slice(0, -2);
  }
  return s;
}

export function sameVersion(a: string, b: string): boolean {
  return normalizeVersion(a) === normalizeVersion(b);
}

/** The version in a wheel's file name (`sigmaloop-0.1.0-py3-none-any.whl` → `0.1.0`), for our package only. */
export function wheelVersion(fileName: string): string | undefined {
  const m = /^([A-Za-z0-9_.]+)-([^-]+)-.+\.whl$/.exec(fileName);
  if (!m || m[1].toLowerCase().replace(/[-_.]+/g, '_') !== PACKAGE) {
    return undefined;
  }
  return m[2];
}

/** The bundled wheel of exactly this version among the files of bundled/ (none: a dev build). */
export function pickBundledWheel(files: readonly string[], version: string): string | undefined {
  return files.filter((f) => {
    const v = wheelVersion(f);
    return v !== undefined && sameVersion(v, version);
  }).sort()[0];
}

export type VersionCheck =
  | { kind: 'match'; version: string }
  | { kind: 'mismatch'; server: string | undefined; extension: string };

/** Compare `serverInfo.version` from `initialize` with the extension's version; none reported is a mismatch. */
export function checkServerVersion(serverVersion: unknown, extensionVersion: string): VersionCheck {
  if (typeof serverVersion === 'string' && serverVersion.trim() && sameVersion(serverVersion, extensionVersion)) {
    return { kind: 'match', version: serverVersion.trim() };
  }
  return {
    kind: 'mismatch',
    server: typeof serverVersion === 'string' && serverVersion.trim() ? serverVersion.trim() : undefined,
    extension: extensionVersion,
  };
}

/** What "Install" does for an interpreter: the bundled wheel, a source checkout (dev build), or nothing to install from. */
export type InstallPlan =
  | { kind: 'wheel'; python: string; args: string[]; command: string; wheel: string; version: string }
  | { kind: 'source'; python: string; args: string[]; command: string; checkout: string }
  | { kind: 'none'; python: string; command: string };

export interface InstallInputs {
  python: string;
  /** The extension's own version (package.json). */
  version: string;
  /** The extension's bundled/ folder and the file names in it. */
  bundledDir: string;
  bundledFiles: readonly string[];
  /** The extension's folder when it is a sigmaloop source checkout (a development host), else undefined. */
  checkout?: string;
  /** Path joiner (node:path's join; injected so this stays pure and testable on any OS). */
  join: (...parts: string[]) => string;
}

/**
 * `<python> -m pip install <bundled wheel>`: the wheel of the extension's own version, without
 * extras (the server never needs torch). No wheel (a dev build): `pip install -e <checkout>` when
 * the extension runs from a source checkout, else only a command to adapt.
 */
export function installPlan(inp: InstallInputs): InstallPlan {
  const file = pickBundledWheel(inp.bundledFiles, inp.version);
  if (file) {
    const wheel = inp.join(inp.bundledDir, file);
    const args = ['-m', 'pip', 'install', wheel];
    return { kind: 'wheel', python: inp.python, args, command: commandLine(inp.python, args), wheel, version: wheelVersion(file) ?? inp.version };
  }
  if (inp.checkout) {
    const args = ['-m', 'pip', 'install', '-e', inp.checkout];
    return { kind: 'source', python: inp.python, args, command: commandLine(inp.python, args), checkout: inp.checkout };
  }
  return { kind: 'none', python: inp.python, command: `${quoteArg(inp.python)} -m pip install -e <your sigmaloop checkout>` };
}

/** The command as a user would type it (POSIX shell quoting). */
export function commandLine(python: string, args: readonly string[]): string {
  return [python, ...args].map(quoteArg).join(' ');
}

/** Why the package needs installing: not there at all, or a server of another version. */
export type InstallReason = { kind: 'missing' } | { kind: 'mismatch'; server: string | undefined };

/** The offer shown before installing (the message; the buttons are the caller's). */
export function installOffer(plan: InstallPlan, reason: InstallReason, extensionVersion: string): string {
  const py = `"${plan.python}"`;
  const why =
    reason.kind === 'missing'
      ? `the interpreter ${py} does not have the ${PACKAGE} package.`
      : `the server in ${py} is ${reason.server ? `${PACKAGE} ${reason.server}` : 'a version that does not report itself'}, this extension is ${extensionVersion}.`;
  switch (plan.kind) {
    case 'wheel':
      return `Sigmaloop: ${why} Install the bundled ${PACKAGE} ${plan.version} (${baseName(plan.wheel)}) into it? Command: ${plan.command}`;
    case 'source':
      return `Sigmaloop: ${why} This extension is a development build without a bundled wheel; install from its source checkout with: ${plan.command}`;
    case 'none':
      return `Sigmaloop: ${why} This extension carries no bundled wheel (a development build; "npm run package" bundles one). Install from a source checkout with: ${plan.command}`;
  }
}

/** Environment for pip: non-interactive, no version nag, no progress bars in the log. */
export function pipEnv(base: Record<string, string | undefined>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(base)) {
    if (typeof v === 'string') {
      env[k] = v;
    }
  }
  delete env.OPENAI_API_KEY;
  return { ...env, PIP_NO_INPUT: '1', PIP_DISABLE_PIP_VERSION_CHECK: '1', PIP_PROGRESS_BAR: 'off', PYTHONUNBUFFERED: '1' };
}

/** A failed pip run, said so a user can act on it: what went wrong and what to do, with the exact command. */
export function explainInstallFailure(plan: InstallPlan, exit: { code: number | null; signal?: string | null; spawnError?: string }, output: string): string {
  const cmd = plan.command;
  if (exit.spawnError) {
    return `Sigmaloop: could not run ${`"${plan.python}"`} (${exit.spawnError}). Set sigmaloop.pythonPath to an existing interpreter, or run: ${cmd}`;
  }
  if (/externally-managed-environment/.test(output)) {
    return `Sigmaloop: "${plan.python}" is managed by the system (PEP 668), so pip will not install into it. Create a virtual environment (python3 -m venv .venv), set sigmaloop.pythonPath to .venv/bin/python, and install again. Command: ${cmd}`;
  }
  if (/No module named pip\b/.test(output)) {
    return `Sigmaloop: "${plan.python}" has no pip. Run "${plan.python} -m ensurepip" (or use a virtual environment), then: ${cmd}`;
  }
  const how = exit.signal ? `was stopped (${exit.signal})` : `exited with ${exit.code ?? '?'}`;
  const last = lastErrorLine(output);
  return `Sigmaloop: installing ${PACKAGE} failed: pip ${how}${last ? ` (${last})` : ''}. The log has pip's output; run it yourself with: ${cmd}`;
}

/** The last line that looks like an error in pip's output (ERROR: …), else the last non-empty line. */
export function lastErrorLine(output: string): string | undefined {
  const lines = output.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
  const err = [...lines].reverse().find((l) => /^(ERROR|error):/.test(l));
  const line = err ?? lines[lines.length - 1];
  if (!line) {
    return undefined;
  }
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}

function baseName(p: string): string {
  return p.split(/[\\/]/).pop() ?? p;
}
