// Command ids (fixed names from the design card). Pure, so the manifest test can check them.

/** Server commands the client registers itself (prompts, quick picks, diff view) and forwards. */
export const CLIENT_OWNED_COMMANDS = new Set([
  'researchloop.runBaseline',
  'researchloop.propose',
  'researchloop.accept',
  'researchloop.reject',
  'researchloop.startLoop',
  'researchloop.stopLoop',
  'researchloop.showExperiment',
  'researchloop.adopt',
  // the server's code lens title: opens the loss panel
  'researchloop.summary',
]);

/** Commands that exist only in the client. */
export const CLIENT_ONLY_COMMANDS = new Set(['researchloop.showPanel', 'researchloop.setApiKey', 'researchloop.restartServer']);

/** Commands that start trials or agents: refused in an untrusted workspace. */
export const NEEDS_TRUST = new Set([
  'researchloop.runBaseline',
  'researchloop.propose',
  'researchloop.accept',
  'researchloop.startLoop',
  'researchloop.adopt',
]);
