// The Python extension (ms-python.python, optional) through its published API package
// (@vscode/python-extension): the interpreter selected for a folder, and an event when that
// selection changes. Without the extension both are no-ops; sigmaloop.pythonPath still wins
// over it (settings.ts resolves the order).

import { PVSC_EXTENSION_ID, PythonExtension } from '@vscode/python-extension';
import * as vscode from 'vscode';

export class PythonInterpreters implements vscode.Disposable {
  private listener: vscode.Disposable | undefined;

  constructor(
    private readonly log: vscode.LogOutputChannel,
    /** Called when the Python extension's selection for `resource` changes. */
    private readonly onChange: (resource: vscode.Uri | undefined) => void,
  ) {}

  static installed(): boolean {
    return vscode.extensions.getExtension(PVSC_EXTENSION_ID) !== undefined;
  }

  /** The interpreter the Python extension has selected for `resource`, or undefined (not installed, none selected, API failed). */
  async active(resource: vscode.Uri | undefined): Promise<string | undefined> {
    if (!PythonInterpreters.installed()) {
      return undefined;
    }
    try {
      const api = await PythonExtension.api();
      this.watch(api);
      const envPath = api.environments.getActiveEnvironmentPath(resource);
      const env = await api.environments.resolveEnvironment(envPath);
      return env?.executable.uri?.fsPath ?? envPath.path;
    } catch (err) {
      this.log.warn(`Python extension API failed: ${String(err)}`);
      return undefined;
    }
  }

  private watch(api: PythonExtension): void {
    if (!this.listener) {
      this.listener = api.environments.onDidChangeActiveEnvironmentPath((e) => {
        const resource = e.resource && 'uri' in e.resource ? e.resource.uri : e.resource;
        this.onChange(resource ?? undefined);
      });
    }
  }

  dispose(): void {
    this.listener?.dispose();
  }
}
