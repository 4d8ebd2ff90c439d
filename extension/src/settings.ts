// Settings resolution, pure: which interpreter runs the server, what environment and
// initialization options it gets. The vscode-facing code gathers the inputs.

import type { InitializationOptions, Settings } from './contract';

export interface InterpreterInputs {
  /** sigmaloop.pythonPath (workspace value ignored by VS Code in Restricted Mode). */
  setting?: string | null;
  /** The Python extension's active interpreter, when that extension is installed. */
  pythonExtension?: string | null;
  /** Fallback when neither is set. */
  fallback?: string;
}

export interface ResolvedInterpreter {
  path: string;
  source: 'setting' | 'python-extension' | 'default';
}

/**
 * An explicit sigmaloop.pythonPath wins (the user asked for it); otherwise the Python
 * extension's selected interpreter; otherwise python3. `${workspaceFolder}` and `~` expand.
 */
export function resolveInterpreter(inp: InterpreterInputs, vars: { workspaceFolder?: string; home?: string } = {}): ResolvedInterpreter {
  const setting = expand((inp.setting ?? '').trim(), vars);
  if (setting) {
    return { path: setting, source: 'setting' };
  }
  const ext = (inp.pythonExtension ?? '').trim();
  if (ext) {
    return { path: ext, source: 'python-extension' };
  }
  return { path: inp.fallback ?? 'python3', source: 'default' };
}

export function expand(p: string, vars: { workspaceFolder?: string; home?: string }): string {
  let out = p;
  if (vars.workspaceFolder) {
    out = out.split('${workspaceFolder}').join(vars.workspaceFolder);
  }
  if (vars.home && (out === '~' || out.startsWith('~/'))) {
    out = vars.home + out.slice(1);
  }
  return out;
}

/** The sigmaloop.* settings forwarded to the server (null/empty = the toml decides). */
export type ForwardedSettings = Required<Pick<Settings, 'budget' | 'slots' | 'proposer'>> & { llm: { baseUrl: string | null; model: string | null } };

export function normalizeSettings(get: (key: string) => unknown): ForwardedSettings {
  const num = (v: unknown, integer: boolean): number | null => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      return null;
    }
    return integer ? Math.max(1, Math.floor(v)) : v;
  };
  const str = (v: unknown): string | null => (typeof v === 'string' && v.trim() ? v.trim() : null);
  const proposer = str(get('proposer'));
  return {
    budget: num(get('budget'), false),
    slots: num(get('slots'), true),
    proposer: proposer === 'tune' || proposer === 'llm' || proposer === 'mixed' ? proposer : null,
    llm: { baseUrl: str(get('llm.baseUrl')), model: str(get('llm.model')) },
  };
}

/**
 * The server process's environment: the editor's, with unbuffered Python output. The key stored
 * with Set API Key is not put in it: it goes over the connection (`sigmaloop/setApiKey`).
 */
export function serverEnv(base: Record<string, string | undefined>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(base)) {
    if (typeof v === 'string') {
      env[k] = v;
    }
  }
  env.PYTHONUNBUFFERED = '1';
  return env;
}

/** The host a key is stored for: the user's own base URL setting's (lower case), else none (the server's default, OpenAI's). */
export function keyHost(baseUrl: unknown): string | null {
  if (typeof baseUrl !== 'string' || !baseUrl.trim()) {
    return null;
  }
  try {
    return new URL(baseUrl.trim()).hostname.toLowerCase() || null;
  } catch {
    return null;
  }
}

export function initializationOptions(settings: ForwardedSettings, trusted: boolean): InitializationOptions {
  return { settings, trusted, client: 'vscode' };
}

export function quoteArg(s: string): string {
  return /^[A-Za-z0-9_./:=@+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Keys whose change needs a server restart (the interpreter); others are sent as didChangeConfiguration. */
export function needsRestart(affects: (section: string) => boolean): boolean {
  return affects('sigmaloop.pythonPath');
}
