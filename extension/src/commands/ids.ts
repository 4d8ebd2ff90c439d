// Command ids (fixed names from the design card). Pure, so the manifest test can check them.

/** Server commands the client registers itself (prompts, quick picks, diff view) and forwards. */
export const CLIENT_OWNED_COMMANDS = new Set([
  'sigmaloop.runBaseline',
  'sigmaloop.propose',
  'sigmaloop.accept',
  'sigmaloop.reject',
  // the second look at an implausibly large gain: keep it, or refuse it for good
  'sigmaloop.acceptResult',
  'sigmaloop.rejectResult',
  'sigmaloop.startLoop',
  'sigmaloop.stopLoop',
  'sigmaloop.showExperiment',
  'sigmaloop.adopt',
  // the server's code lens title: opens the loss panel
  'sigmaloop.summary',
  // the researcher's own edit (asks for its hypothesis, prediction and question first)
  'sigmaloop.runEdit',
  // research questions (asked with their decision; closed with what was learned)
  'sigmaloop.ask',
  'sigmaloop.closeQuestion',
  // an anomaly's quick fix: asks for the optional reason first
  'sigmaloop.dismissAnomaly',
]);

/** Commands that exist only in the client. */
export const CLIENT_ONLY_COMMANDS = new Set([
  'sigmaloop.showPanel',
  'sigmaloop.setApiKey',
  'sigmaloop.restartServer',
  'sigmaloop.installServer',
  // a trial's log in an editor tab (palette, hover link, code action, panel)
  'sigmaloop.openLog',
  // an anomaly's quick fix (and the palette): the loss panel with the experiment overlaid
  'sigmaloop.showCurve',
  // the morning report (sigmaloop.report) in its panel, and its file in the system browser
  'sigmaloop.openReport',
  'sigmaloop.openReportInBrowser',
]);

/** Commands that start trials or agents: refused in an untrusted workspace. */
export const NEEDS_TRUST = new Set([
  'sigmaloop.runBaseline',
  'sigmaloop.propose',
  'sigmaloop.accept',
  'sigmaloop.startLoop',
  'sigmaloop.adopt',
  'sigmaloop.runEdit',
  // runs pip in the chosen interpreter
  'sigmaloop.installServer',
]);
