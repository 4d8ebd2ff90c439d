// The research commands: Run My Edit (the open train script, as the researcher has it, as an
// experiment: hypothesis, predicted Δ and question first, each skippable), Ask a Research
// Question, Close a Research Question, and Open Trial Log (from the palette, the hover, code
// actions and the panel).

import * as vscode from 'vscode';
import type { ExperimentWire } from '../contract';
import type { EditStatusResult, QuestionState } from '../protocol.gen';
import { parseExpId } from '../store';
import { type CommandContext, forward } from './forward';
import { closablePicks, logPicks, parseDelta, questionPicks, validateDelta } from './prompts';

export function registerResearchCommands(c: CommandContext): vscode.Disposable[] {
  return [
    vscode.commands.registerCommand('sigmaloop.runEdit', async () => {
      const status = await forward<EditStatusResult>(c, 'sigmaloop.editStatus', []);
      if (!status) {
        return;
      }
      if (!status.differs) {
        const pick = await vscode.window.showInformationMessage(`Sigmaloop: ${status.summary}.`, 'Run Baseline');
        if (pick) {
          void vscode.commands.executeCommand('sigmaloop.runBaseline');
        }
        return;
      }
      const title = `Run my edit (+${status.added}/-${status.removed} lines against head ${status.head})`;
      // each answer is skippable: Escape or empty leaves it out
      const hypothesis = await vscode.window.showInputBox({
        title,
        prompt: 'Hypothesis: what should this edit do to the metric, and why? (optional: Enter or Escape skips)',
        placeHolder: 'e.g. a longer warmup stabilises the first steps',
        ignoreFocusOut: true,
      });
      const deltaText = await vscode.window.showInputBox({
        title,
        prompt: `Predicted Δ ${c.store.state?.metric ?? 'metric'} (the metric minus the reference; optional: Enter or Escape skips)`,
        placeHolder: 'e.g. -0.01',
        validateInput: validateDelta,
        ignoreFocusOut: true,
      });
      const predicted = deltaText === undefined ? null : (parseDelta(deltaText) ?? null);
      let question: number | null = null;
      const picks = questionPicks(c.store.state?.questions);
      if (picks.length) {
        const pick = await vscode.window.showQuickPick(picks, { title, placeHolder: 'Which research question does it test? (Escape: none)', ignoreFocusOut: true });
        question = pick?.id ?? null;
      }
      const e = await forward<ExperimentWire>(c, 'sigmaloop.runEdit', [hypothesis?.trim() || null, predicted, question]);
      if (e && typeof e.id === 'number') {
        c.watched.add(e.id);
        c.store.upsert(e);
        c.refresh();
        c.panel.show(true);
        vscode.window.setStatusBarMessage(`Sigmaloop: #${e.id} queued: your edit (${status.summary.split(':')[0]})`, 8000);
      }
    }),

    vscode.commands.registerCommand('sigmaloop.ask', async (textArg?: unknown, decisionArg?: unknown) => {
      let text = typeof textArg === 'string' ? textArg : undefined;
      let decision = typeof decisionArg === 'string' ? decisionArg : undefined;
      if (text === undefined) {
        text = await vscode.window.showInputBox({
          title: 'Sigmaloop: Ask a Research Question',
          prompt: 'A sharp, falsifiable question the experiments should answer',
          placeHolder: 'e.g. Does a longer warmup help at a 60 s budget?',
          validateInput: (v) => (v.trim() ? undefined : 'a question needs words'),
          ignoreFocusOut: true,
        });
        if (text === undefined) {
          return; // Escape cancels the question
        }
        decision ??= await vscode.window.showInputBox({
          title: `Sigmaloop: ${text.trim()}`,
          prompt: 'What result would change your decision? (optional)',
          placeHolder: 'e.g. if it is ≥ 0.01 bpb better I switch the default warmup',
          ignoreFocusOut: true,
        });
      }
      const q = await forward<QuestionState>(c, 'sigmaloop.ask', decision?.trim() ? [text.trim(), decision.trim()] : [text.trim()]);
      if (q && typeof q.id === 'number') {
        void vscode.window.showInformationMessage(`Sigmaloop: Q${q.id} asked: ${q.text} — proposals now say which question they test.`);
      }
    }),

    vscode.commands.registerCommand('sigmaloop.closeQuestion', async (idArg?: unknown, answerArg?: unknown) => {
      let id = parseExpId(idArg);
      if (id === undefined) {
        const picks = closablePicks(c.store.state?.questions);
        if (!picks.length) {
          void vscode.window.showInformationMessage('Sigmaloop: no research question yet (Sigmaloop: Ask a Research Question).');
          return;
        }
        id = (await vscode.window.showQuickPick(picks, { placeHolder: 'Close which question?' }))?.id ?? undefined;
        if (id === undefined) {
          return;
        }
      }
      let answer = typeof answerArg === 'string' ? answerArg : undefined;
      let status = 'answered';
      if (answer === undefined) {
        const how = await vscode.window.showQuickPick(
          [
            { label: 'Answered', description: 'with what was learned', status: 'answered' },
            { label: 'Dropped', description: 'no longer worth asking', status: 'dropped' },
            { label: 'Reopen', description: 'the loop is steered to it again', status: 'open' },
          ],
          { placeHolder: `Q${id}: answered, dropped or reopened?` },
        );
        if (!how) {
          return;
        }
        status = how.status;
        if (status !== 'open') {
          answer = await vscode.window.showInputBox({ title: `Close Q${id}`, prompt: 'What was learned? (optional)', ignoreFocusOut: true });
          if (answer === undefined) {
            return;
          }
        }
      }
      const q = await forward<QuestionState>(c, 'sigmaloop.closeQuestion', [id, answer?.trim() ?? '', status]);
      if (q) {
        vscode.window.setStatusBarMessage(`Sigmaloop: Q${q.id} ${q.status}`, 5000);
      }
    }),

    vscode.commands.registerCommand('sigmaloop.openLog', async (arg?: unknown) => {
      let id = parseExpId(arg);
      if (id === undefined) {
        const picks = logPicks(c.store.experiments.values());
        if (!picks.length) {
          void vscode.window.showInformationMessage('Sigmaloop: no trial has a log yet.');
          return;
        }
        id = (await vscode.window.showQuickPick(picks, { placeHolder: 'Open the log of which trial?', matchOnDescription: true }))?.id;
        if (id === undefined) {
          return;
        }
      }
      await openLog(c, id);
    }),
  ];
}

/** The trial's log in an editor tab (the record's logPath; asked of the server when the store lacks it). */
async function openLog(c: CommandContext, id: number): Promise<void> {
  let path = c.store.experiments.get(id)?.logPath;
  if (typeof path !== 'string' || !path) {
    try {
      const res = await c.server.request<{ experiments: ExperimentWire[] }>('sigmaloop/experiments', { ids: [id] });
      const e = res?.experiments?.[0];
      if (e) {
        c.store.upsert(e);
        path = e.logPath;
      }
    } catch (err) {
      c.log.warn(`openLog #${id}: ${String(err)}`);
    }
  }
  if (typeof path !== 'string' || !path) {
    void vscode.window.showInformationMessage(`Sigmaloop: #${id} has no log (it never ran).`);
    return;
  }
  try {
    const doc = await vscode.workspace.openTextDocument(vscode.Uri.file(path));
    await vscode.window.showTextDocument(doc, { preview: true });
  } catch (err) {
    void vscode.window.showWarningMessage(`Sigmaloop: the log of #${id} could not be opened (${path}): ${err instanceof Error ? err.message : String(err)}`);
  }
}
