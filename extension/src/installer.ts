// Runs the install the pure plan (install.ts) describes: `<python> -m pip install <bundled wheel>`
// as a child process, with a progress notification (cancellable) and pip's output streamed line
// by line into the Sigmaloop log. On failure: an error that says what to do, with the exact
// command (Copy Command / Show Log).

import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { type InstallPlan, explainInstallFailure, installPlan, pipEnv } from './install';

export type RunnablePlan = Exclude<InstallPlan, { kind: 'none' }>;

interface PipExit {
  code: number | null;
  signal?: string | null;
  spawnError?: string;
  cancelled?: boolean;
}

/** pip's output kept for explaining a failure (the log has all of it). */
const KEEP_OUTPUT = 64 * 1024;

export class Installer {
  constructor(
    private readonly extensionPath: string,
    readonly version: string,
    private readonly log: vscode.LogOutputChannel,
  ) {}

  get bundledDir(): string {
    return path.join(this.extensionPath, 'bundled');
  }

  /** The plan for this interpreter: the bundled wheel of this version, else the source checkout we run from (a dev host), else none. */
  plan(python: string): InstallPlan {
    let files: string[] = [];
    try {
      files = readdirSync(this.bundledDir);
    } catch {
      // no bundled/ folder: a development build
    }
    const isCheckout =
      existsSync(path.join(this.extensionPath, 'pyproject.toml')) && existsSync(path.join(this.extensionPath, 'server', 'sigmaloop', '__init__.py'));
    const checkout = isCheckout ? this.extensionPath : undefined;
    return installPlan({ python, version: this.version, bundledDir: this.bundledDir, bundledFiles: files, checkout, join: (...p) => path.join(...p) });
  }

  /** Run pip; true when it succeeded. Failures are explained to the user here. */
  async run(plan: RunnablePlan): Promise<boolean> {
    this.log.info(`installing: ${plan.command}`);
    this.log.show(true);
    const what = plan.kind === 'wheel' ? path.basename(plan.wheel) : `sigmaloop from ${plan.checkout}`;
    let output = '';
    const exit = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: `Sigmaloop: installing ${what}`, cancellable: true },
      (progress, token) =>
        new Promise<PipExit>((resolve) => {
          // cwd: a folder without Python files, so nothing there shadows pip or the package
          const cwd = plan.kind === 'wheel' ? path.dirname(plan.wheel) : os.tmpdir();
          const child = spawn(plan.python, plan.args, { cwd, env: pipEnv(process.env), stdio: ['ignore', 'pipe', 'pipe'] });
          let cancelled = false;
          const sub = token.onCancellationRequested(() => {
            cancelled = true;
            this.log.warn('install cancelled; stopping pip');
            child.kill();
          });
          const onLine = (line: string, stream: 'out' | 'err') => {
            output = (output + line + '\n').slice(-KEEP_OUTPUT);
            if (!line.trim()) {
              return;
            }
            if (stream === 'err') {
              // warnings (index locations, deprecations): the log, not the progress line
              this.log.warn(`pip: ${line}`);
            } else {
              this.log.info(`pip: ${line}`);
              progress.report({ message: line.length > 100 ? `${line.slice(0, 100)}…` : line.trim() });
            }
          };
          const flushers = [lines(child.stdout, (l) => onLine(l, 'out')), lines(child.stderr, (l) => onLine(l, 'err'))];
          child.on('error', (err) => {
            sub.dispose();
            resolve({ code: null, spawnError: err.message });
          });
          child.on('close', (code, signal) => {
            sub.dispose();
            flushers.forEach((f) => f());
            resolve({ code, signal, cancelled });
          });
        }),
    );
    if (exit.code === 0) {
      this.log.info(`installed: ${what} into ${plan.python}`);
      return true;
    }
    if (exit.cancelled) {
      this.log.warn(`install cancelled: ${plan.command}`);
      void vscode.window.showWarningMessage(`Sigmaloop: the install was cancelled. To install later, run: ${plan.command}`, 'Copy Command').then((p) => {
        if (p) {
          void vscode.env.clipboard.writeText(plan.command);
        }
      });
      return false;
    }
    const msg = explainInstallFailure(plan, exit, output);
    this.log.error(msg);
    void vscode.window.showErrorMessage(msg, 'Copy Command', 'Show Log').then((p) => {
      if (p === 'Copy Command') {
        void vscode.env.clipboard.writeText(plan.command);
      } else if (p === 'Show Log') {
        this.log.show();
      }
    });
    return false;
  }
}

/** Call onLine for each complete line of a stream; the returned function flushes the last partial line. */
function lines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): () => void {
  let buf = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    buf += chunk;
    const parts = buf.split(/\r?\n|\r/);
    buf = parts.pop() ?? '';
    parts.forEach(onLine);
  });
  return () => {
    if (buf) {
      onLine(buf);
      buf = '';
    }
  };
}
