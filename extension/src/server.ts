// The language server's lifecycle: find the workspace's sigmaloop.toml, resolve the
// interpreter, check that it has the package (offer to install the bundled wheel when not),
// start `python -m sigmaloop.lsp` over stdio, check the server's version against the
// extension's (offer the bundled wheel on a mismatch), restart with a cause (asking first when
// trials would be stopped; restart.ts decides), log how the process ended.

import { type ChildProcess, execFile, spawn } from 'node:child_process';
import * as path from 'node:path';
import * as vscode from 'vscode';
import {
  type DocumentSelector,
  ErrorAction,
  ExecuteCommandRequest,
  type ErrorHandler,
  LanguageClient,
  type LanguageClientOptions,
  CloseAction,
  type ServerOptions,
  State,
} from 'vscode-languageclient/node';
import { CLIENT_OWNED_COMMANDS } from './commands/ids';
import { type ExperimentWire, Methods, type Requests, type TrialProgressParams, parseDone, parseTrialProgress, unwrapExperiment } from './contract';
import { type EngineStateView, parseEngineState } from './engineState';
import { type InstallPlan, type InstallReason, checkServerVersion, installOffer } from './install';
import { Installer, type RunnablePlan } from './installer';
import { PythonInterpreters } from './python';
import { type Busy, type RestartCause, describeCause, exitLine, restartDecision, restartQuestion } from './restart';
import { initializationOptions, normalizeSettings, resolveInterpreter, serverEnv, type ResolvedInterpreter } from './settings';
import type { DoneParams } from './protocol.gen';
import type { ServerState } from './store';

export const SECRET_KEY = 'sigmaloop.apiKey';
/** The host the stored key is for (the user's own sigmaloop.llm.baseUrl when the key was set). */
export const SECRET_KEY_HOST = 'sigmaloop.apiKeyHost';

type SetApiKey = Requests['sigmaloop/setApiKey'];

export interface ServerEvents {
  onExperiment(e: ExperimentWire): void;
  onProgress(p: TrialProgressParams): void;
  /** `sigmaloop/state`: the engine's state. */
  onEngineState(s: EngineStateView): void;
  onState(s: ServerState): void;
  onReady(): void;
  /** `sigmaloop/done`: a baseline or a loop started from the editor ended. */
  onDone(p: DoneParams): void;
  /** What a restart would stop now. */
  busy(): Busy;
}

export class ServerController implements vscode.Disposable {
  client: LanguageClient | undefined;
  state: ServerState = 'stopped';
  root: string | undefined;
  interpreter: ResolvedInterpreter | undefined;
  private readonly disposables: vscode.Disposable[] = [];
  private readonly python: PythonInterpreters;
  /** The server process (spawned here, so its exit is logged for what it was). */
  private process: ChildProcess | undefined;
  /** Processes we asked to stop: their exit is not an error. */
  private readonly stopRequested = new WeakSet<ChildProcess>();
  /** A restart the user put off while trials ran: done once they end. */
  private deferred: RestartCause | undefined;
  private asking = false;
  /** Restarts done this session (with their causes), for the log and tests. */
  readonly restarts: string[] = [];
  private starting: Promise<void> | undefined;
  private installing: Promise<boolean> | undefined;
  private crashes: number[] = [];
  /** Version mismatches already offered this session (python + server version): ask once. */
  private readonly mismatchOffered = new Set<string>();
  readonly installer: Installer;

  constructor(
    private readonly ctx: vscode.ExtensionContext,
    private readonly log: vscode.LogOutputChannel,
    private readonly events: ServerEvents,
  ) {
    const version = (ctx.extension.packageJSON as { version?: unknown }).version;
    this.installer = new Installer(ctx.extensionUri.fsPath, typeof version === 'string' ? version : '0.0.0', log);
    this.python = new PythonInterpreters(log, () => void this.requestRestart({ kind: 'interpreter' }));
    this.disposables.push(this.python);
  }

  /** The extension's own version (package.json); the bundled wheel has the same one. */
  get version(): string {
    return this.installer.version;
  }

  private setState(s: ServerState): void {
    if (this.state !== s) {
      this.state = s;
      this.log.info(`server state: ${s}`);
      this.events.onState(s);
    }
  }

  /** The folder with sigmaloop.toml (first found; the workspace folder's own first). */
  async findRoot(): Promise<string | undefined> {
    const folders = vscode.workspace.workspaceFolders ?? [];
    for (const f of folders) {
      try {
        await vscode.workspace.fs.stat(vscode.Uri.joinPath(f.uri, 'sigmaloop.toml'));
        return f.uri.fsPath;
      } catch {
        // not at the top of this folder
      }
    }
    const found = await vscode.workspace.findFiles('**/sigmaloop.toml', '**/{node_modules,.git,.sigmaloop,.venv}/**', 5);
    found.sort((a, b) => a.fsPath.length - b.fsPath.length);
    return found.length ? path.dirname(found[0].fsPath) : undefined;
  }

  async resolvePython(root: string): Promise<ResolvedInterpreter> {
    const uri = vscode.Uri.file(root);
    const cfg = vscode.workspace.getConfiguration('sigmaloop', uri);
    const setting = cfg.get<string>('pythonPath') ?? '';
    const fromExt = setting.trim() ? undefined : await this.python.active(uri);
    return resolveInterpreter(
      { setting, pythonExtension: fromExt, fallback: 'python3' },
      { workspaceFolder: vscode.workspace.getWorkspaceFolder(uri)?.uri.fsPath ?? root, home: process.env.HOME },
    );
  }

  /** 'ok', or why the interpreter cannot run the server. */
  checkPackage(python: string, cwd: string): Promise<string> {
    const code = 'import importlib.util, sys; sys.exit(0 if importlib.util.find_spec("sigmaloop.lsp") else 3)';
    return new Promise((resolve) => {
      execFile(python, ['-c', code], { cwd, timeout: 60_000 }, (err, _stdout, stderr) => {
        if (!err) {
          resolve('ok');
        } else if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          resolve('no-interpreter');
        } else if ((err as { code?: unknown }).code === 3 || /No module named/.test(stderr)) {
          resolve('missing-package');
        } else {
          resolve(`${err.message}\n${stderr}`.trim());
        }
      });
    });
  }

  start(): Promise<void> {
    if (!this.starting) {
      this.starting = this.doStart().finally(() => {
        this.starting = undefined;
      });
    }
    return this.starting;
  }

  private async doStart(): Promise<void> {
    if (this.client) {
      return;
    }
    if (!vscode.workspace.isTrusted) {
      this.setState('restricted');
      this.log.info('Restricted Mode: the server is not started (no trial or agent runs until the workspace is trusted)');
      return;
    }
    const root = await this.findRoot();
    this.root = root;
    if (!root) {
      this.setState('noWorkspace');
      return;
    }
    this.setState('starting');
    const py = await this.resolvePython(root);
    this.interpreter = py;
    this.log.info(`interpreter: ${py.path} (${py.source}); workspace: ${root}`);
    const check = await this.checkPackage(py.path, root);
    if (check === 'missing-package') {
      this.setState('notInstalled');
      void this.offerInstall({ kind: 'missing' }, py);
      return;
    }
    if (check !== 'ok') {
      this.setState('failed');
      void this.explainStartFailure(check, py);
      return;
    }
    const env = serverEnv(process.env);
    const serverOptions: ServerOptions = () => this.spawnServer(py.path, root, env);
    const rootUri = vscode.Uri.file(root);
    const folder = vscode.workspace.getWorkspaceFolder(rootUri);
    const selector: DocumentSelector = [{ scheme: 'file', language: 'python', pattern: `${escapeGlob(root)}/**/*.py` }];
    const settings = normalizeSettings((k) => vscode.workspace.getConfiguration('sigmaloop', rootUri).get(k));
    const clientOptions: LanguageClientOptions = {
      documentSelector: selector,
      workspaceFolder: folder && folder.uri.fsPath === root ? folder : { uri: rootUri, name: path.basename(root), index: 0 },
      outputChannel: this.log,
      initializationOptions: initializationOptions(settings, vscode.workspace.isTrusted),
      synchronize: { configurationSection: 'sigmaloop' },
      markdown: { isTrusted: { enabledCommands: ['sigmaloop.showExperiment', 'sigmaloop.openLog'] }, supportHtml: false },
      errorHandler: this.errorHandler(),
    };
    const client = new LanguageClient('sigmaloop', 'Sigmaloop', serverOptions, clientOptions);
    this.ownCommands(client);
    client.onNotification('sigmaloop/trialProgress', (params: unknown) => {
      const p = parseTrialProgress(params);
      if (p) {
        this.events.onProgress(p);
      }
    });
    client.onNotification('sigmaloop/experimentUpdated', (params: unknown) => {
      const e = unwrapExperiment(params);
      if (e) {
        this.events.onExperiment(e);
      }
    });
    client.onNotification('sigmaloop/state', (params: unknown) => {
      const st = parseEngineState(params);
      if (st) {
        this.events.onEngineState(st);
      } else {
        this.log.warn(`ignored a malformed sigmaloop/state: ${JSON.stringify(params).slice(0, 200)}`);
      }
    });
    client.onNotification('sigmaloop/done', (params: unknown) => {
      const p = parseDone(params);
      if (p) {
        this.events.onDone(p);
      } else {
        this.log.warn(`ignored a malformed sigmaloop/done: ${JSON.stringify(params).slice(0, 200)}`);
      }
    });
    client.onDidChangeState((e) => {
      if (e.newState === State.Running) {
        this.setState('running');
        void this.sendApiKey();
        // first start and every automatic restart: reload what the journal holds
        this.events.onReady();
      } else if (e.newState === State.Stopped && this.client === client && this.state !== 'failed') {
        this.setState('stopped');
      }
    });
    this.client = client;
    try {
      await client.start();
      this.crashes = [];
      this.setState('running');
      this.checkVersion(client, py);
    } catch (err) {
      this.log.error(`server failed to start: ${String(err)}`);
      this.client = undefined;
      this.setState('failed');
      void this.explainStartFailure(String(err), py);
    }
  }

  /**
   * The key stored with Set API Key, and the host it is for, over the connection
   * (`sigmaloop/setApiKey`; the server holds it in memory). `removed`: tell the server to drop it.
   * Nothing is sent when no key is stored (a key in the editor's own environment stays the server's).
   */
  async sendApiKey(removed = false): Promise<void> {
    const client = this.client;
    if (!client || !this.isRunning()) {
      return;
    }
    const key = removed ? undefined : await this.ctx.secrets.get(SECRET_KEY);
    if (!key && !removed) {
      return;
    }
    const params: SetApiKey['params'] = { key: key ?? null, host: key ? ((await this.ctx.secrets.get(SECRET_KEY_HOST)) ?? null) : null };
    try {
      const res = await client.sendRequest<SetApiKey['result']>(Methods.setApiKey, params);
      this.log.info(key ? `API key handed to the server (for ${res?.host ?? 'the default endpoint'})` : 'API key removed from the server');
    } catch (err) {
      this.log.warn(`${Methods.setApiKey}: ${String(err)}`);
    }
  }

  /** `python -m sigmaloop.lsp` over stdio; its end is logged as requested or not (the language client would call both an error). */
  private spawnServer(python: string, cwd: string, env: Record<string, string>): Promise<ChildProcess> {
    const child = spawn(python, ['-m', 'sigmaloop.lsp', '--log-level', 'INFO'], { cwd, env });
    this.process = child;
    child.on('exit', (code, signal) => {
      const line = exitLine(code, signal, this.stopRequested.has(child));
      if (line.level === 'info') {
        this.log.info(line.text);
      } else {
        this.log.error(line.text);
      }
      if (this.process === child) {
        this.process = undefined;
      }
    });
    return new Promise((resolve, reject) => {
      child.once('spawn', () => resolve(child));
      child.once('error', reject);
    });
  }

  /** serverInfo.version from `initialize` against the extension's: a mismatch is logged and the bundled wheel offered. */
  private checkVersion(client: LanguageClient, py: ResolvedInterpreter): void {
    const info = client.initializeResult?.serverInfo;
    const check = checkServerVersion(info?.version, this.version);
    if (check.kind === 'match') {
      this.log.info(`server: ${info?.name ?? 'sigmaloop'} ${check.version} (extension ${this.version})`);
      return;
    }
    this.log.warn(`version mismatch: the server in ${py.path} is ${check.server ?? '(no version reported)'}, the extension is ${check.extension}`);
    const key = `${py.path}\0${check.server ?? ''}`;
    if (!this.mismatchOffered.has(key)) {
      this.mismatchOffered.add(key);
      void this.offerInstall({ kind: 'mismatch', server: check.server }, py);
    }
  }

  /** Offer the bundled wheel (or, in a dev build, the source checkout) for this interpreter. */
  private async offerInstall(reason: InstallReason, py: ResolvedInterpreter): Promise<void> {
    const plan = this.installer.plan(py.path);
    const msg = installOffer(plan, reason, this.version);
    const actions = plan.kind === 'none' ? ['Copy Command', 'Open Settings'] : ['Install', 'Copy Command', 'Open Settings'];
    let pick: string | undefined;
    if (reason.kind === 'missing') {
      this.log.error(msg);
      pick = await vscode.window.showErrorMessage(msg, ...actions);
    } else {
      this.log.warn(msg);
      pick = await vscode.window.showWarningMessage(msg, ...actions);
    }
    if (pick === 'Install' && plan.kind !== 'none') {
      await this.install(plan);
    } else if (pick === 'Copy Command') {
      await vscode.env.clipboard.writeText(plan.command);
    } else if (pick === 'Open Settings') {
      void vscode.commands.executeCommand('workbench.action.openSettings', 'sigmaloop.pythonPath');
    }
  }

  /** Install into the interpreter, then restart the server; one install at a time. */
  install(plan: RunnablePlan): Promise<boolean> {
    if (!this.installing) {
      this.installing = this.doInstall(plan).finally(() => {
        this.installing = undefined;
      });
    }
    return this.installing;
  }

  private async doInstall(plan: RunnablePlan): Promise<boolean> {
    const wasRunning = this.isRunning();
    if (!wasRunning) {
      this.setState('installing');
    }
    const ok = await this.installer.run(plan);
    if (ok) {
      void vscode.window.setStatusBarMessage(`Sigmaloop: installed; starting the server`, 5000);
      await this.requestRestart({ kind: 'installed', what: plan.kind === 'wheel' ? path.basename(plan.wheel) : `sigmaloop from ${plan.checkout}` });
    } else if (!wasRunning) {
      this.setState('notInstalled');
    }
    return ok;
  }

  /** "Sigmaloop: Install Bundled Server Package": the plan for the current interpreter, run without asking (the user asked). */
  async installCommand(): Promise<void> {
    if (!vscode.workspace.isTrusted) {
      throw new ServerNotRunning('restricted');
    }
    const root = this.root ?? (await this.findRoot());
    const py = this.interpreter ?? (root ? await this.resolvePython(root) : undefined);
    if (!py) {
      void vscode.window.showWarningMessage('Sigmaloop: open a folder with sigmaloop.toml first; the interpreter is chosen per workspace.');
      return;
    }
    const plan: InstallPlan = this.installer.plan(py.path);
    if (plan.kind === 'none') {
      await this.offerInstall({ kind: 'missing' }, py);
      return;
    }
    await this.install(plan);
  }

  /** The server's executeCommandProvider lists our commands too: keep the client's own registrations. */
  private ownCommands(client: LanguageClient): void {
    type RegisterData = { id: string; registerOptions: { commands?: string[] } };
    const feature = client.getFeature(ExecuteCommandRequest.method) as unknown as { register(data: RegisterData): void };
    const register = feature.register.bind(feature);
    feature.register = (data: RegisterData) => {
      const commands = (data.registerOptions.commands ?? []).filter((c) => !CLIENT_OWNED_COMMANDS.has(c));
      register({ ...data, registerOptions: { ...data.registerOptions, commands } });
    };
  }

  private errorHandler(): ErrorHandler {
    return {
      error: (_error, _message, count) => ({ action: (count ?? 0) <= 3 ? ErrorAction.Continue : ErrorAction.Shutdown }),
      closed: () => {
        const now = Date.now();
        this.crashes = this.crashes.filter((t) => now - t < 120_000);
        this.crashes.push(now);
        if (this.crashes.length > 3) {
          this.setState('failed');
          void vscode.window
            .showErrorMessage('The Sigmaloop server stopped 4 times in 2 minutes and will not be restarted.', 'Show Log', 'Restart Server')
            .then((pick) => this.onFailurePick(pick));
          return { action: CloseAction.DoNotRestart, handled: true };
        }
        this.log.warn(`restart: the server closed unexpectedly (${this.crashes.length} of 4 in 2 minutes)`);
        this.restarts.push('the server closed unexpectedly');
        return { action: CloseAction.Restart, handled: true };
      },
    };
  }

  private onFailurePick(pick: string | undefined): void {
    if (pick === 'Show Log') {
      this.log.show();
    } else if (pick === 'Restart Server') {
      void this.requestRestart({ kind: 'command' });
    }
  }

  private async explainStartFailure(reason: string, py: ResolvedInterpreter): Promise<void> {
    if (reason === 'no-interpreter') {
      const msg = `Sigmaloop: the Python interpreter "${py.path}" (${py.source}) was not found. Set sigmaloop.pythonPath or select an interpreter.`;
      this.log.error(msg);
      const pick = await vscode.window.showErrorMessage(msg, 'Open Settings', 'Show Log');
      if (pick === 'Open Settings') {
        void vscode.commands.executeCommand('workbench.action.openSettings', 'sigmaloop.pythonPath');
      } else if (pick === 'Show Log') {
        this.log.show();
      }
      return;
    }
    this.log.error(`server could not start: ${reason}`);
    void vscode.window.showErrorMessage(`Sigmaloop: the server could not start (${firstLine(reason)}).`, 'Show Log', 'Restart Server').then((p) => this.onFailurePick(p));
  }

  async stop(): Promise<void> {
    const client = this.client;
    const child = this.process;
    this.client = undefined;
    if (child) {
      this.stopRequested.add(child);
    }
    if (client) {
      try {
        await client.stop(10_000);
      } catch (err) {
        this.log.warn(`stop: ${String(err)}`);
      }
      try {
        await client.dispose();
      } catch {
        // already gone
      }
    }
    if (child && child.exitCode === null && child.signalCode === null) {
      // it had `shutdown` and `exit`; give it a moment to stop its trials, then end it
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          child.kill('SIGTERM');
          resolve();
        }, 5000);
        child.once('exit', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    if (this.state !== 'restricted') {
      this.setState('stopped');
    }
  }

  /**
   * Restart for `cause`: at once when nothing runs; otherwise a modal asks whether to restart
   * now (stopping the loop and the trials) or later (once they have ended: `whenIdle`).
   */
  async requestRestart(cause: RestartCause): Promise<void> {
    const busy = this.events.busy();
    if (!this.client || restartDecision(busy) === 'now') {
      await this.restart(cause);
      return;
    }
    if (this.asking) {
      this.deferred = cause;
      return;
    }
    this.asking = true;
    try {
      const now = 'Restart and Stop Trials';
      const pick = await vscode.window.showWarningMessage(restartQuestion(cause, busy), { modal: true }, now, 'Later');
      if (pick === now) {
        await this.restart(cause);
      } else {
        this.deferred = cause;
        this.log.info(`restart deferred until the trials end: ${describeCause(cause)}`);
      }
    } finally {
      this.asking = false;
    }
  }

  /** Called when what runs changed: a deferred restart goes ahead once nothing does. */
  whenIdle(): void {
    const cause = this.deferred;
    if (cause && !this.asking && restartDecision(this.events.busy()) === 'now') {
      this.deferred = undefined;
      void this.restart({ kind: 'deferred', cause });
    }
  }

  private async restart(cause: RestartCause): Promise<void> {
    if (this.starting) {
      await this.starting;
    }
    const why = describeCause(cause);
    this.restarts.push(why);
    this.log.info(`restart: ${why}`);
    await this.stop();
    this.crashes = [];
    await this.start();
  }

  isRunning(): boolean {
    return !!this.client && this.client.state === State.Running;
  }

  async executeCommand<T = unknown>(command: string, args: unknown[]): Promise<T> {
    if (!this.client || !this.isRunning()) {
      throw new ServerNotRunning(this.state);
    }
    return this.client.sendRequest(ExecuteCommandRequest.type, { command, arguments: args }) as Promise<T>;
  }

  async request<T = unknown>(method: string, params: unknown): Promise<T> {
    if (!this.client || !this.isRunning()) {
      throw new ServerNotRunning(this.state);
    }
    return this.client.sendRequest<T>(method, params);
  }

  dispose(): void {
    this.deferred = undefined;
    for (const d of this.disposables) {
      d.dispose();
    }
    void this.stop();
  }
}

export class ServerNotRunning extends Error {
  constructor(readonly state: ServerState) {
    super(
      state === 'restricted'
        ? 'Sigmaloop runs nothing in Restricted Mode: trust the workspace first.'
        : state === 'notInstalled'
          ? 'The interpreter does not have the sigmaloop package: run "Sigmaloop: Install Bundled Server Package" (or set sigmaloop.pythonPath).'
          : `The Sigmaloop server is not running (${state}).`,
    );
  }
}

function escapeGlob(p: string): string {
  return p.replace(/[[\]{}*?!]/g, (c) => `[${c}]`);
}

function firstLine(s: string): string {
  const line = s.split('\n')[0];
  return line.length > 160 ? `${line.slice(0, 160)}…` : line;
}
