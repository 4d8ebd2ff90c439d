import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { CLIENT_ONLY_COMMANDS, CLIENT_OWNED_COMMANDS, NEEDS_TRUST } from '../../extension/src/commands/ids';

interface Manifest {
  main: string;
  activationEvents: string[];
  capabilities: { untrustedWorkspaces: { supported: string | boolean; restrictedConfigurations?: string[] } };
  contributes: {
    commands: { command: string; title: string; category: string }[];
    menus: Record<string, { command: string; when?: string }[]>;
    configuration: { properties: Record<string, { scope?: string; description?: string; markdownDescription?: string }> };
  };
}

const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as Manifest;
const commands = new Map(pkg.contributes.commands.map((c) => [c.command, c]));

test('every fixed command is contributed with its title, in category "Sigmaloop"', () => {
  const titles: Record<string, string> = {
    'sigmaloop.runBaseline': 'Run Baseline',
    'sigmaloop.propose': 'Propose Experiment',
    'sigmaloop.startLoop': 'Run Loop…',
    'sigmaloop.stopLoop': 'Stop Loop',
    'sigmaloop.showPanel': 'Show Loss Panel',
    'sigmaloop.showExperiment': 'Show Experiment',
    'sigmaloop.setApiKey': 'Set API Key',
    'sigmaloop.restartServer': 'Restart Server',
    'sigmaloop.accept': 'Accept…',
    'sigmaloop.reject': 'Reject…',
    'sigmaloop.adopt': 'Adopt…',
    'sigmaloop.acceptResult': 'Accept Implausible Result…',
    'sigmaloop.rejectResult': 'Reject Implausible Result…',
    'sigmaloop.runEdit': 'Run My Edit',
    'sigmaloop.ask': 'Ask a Research Question',
    'sigmaloop.closeQuestion': 'Close a Research Question…',
    'sigmaloop.openLog': 'Open Trial Log…',
  };
  for (const [id, title] of Object.entries(titles)) {
    assert.equal(commands.get(id)?.title, title, id);
    assert.equal(commands.get(id)?.category, 'Sigmaloop', id);
  }
  for (const c of commands.keys()) {
    assert.ok(CLIENT_OWNED_COMMANDS.has(c) || CLIENT_ONLY_COMMANDS.has(c), `${c} has no handler`);
  }
  for (const c of NEEDS_TRUST) {
    assert.ok(commands.has(c));
  }
});

test('settings are resource-scoped and described', () => {
  const props = pkg.contributes.configuration.properties;
  for (const key of ['sigmaloop.pythonPath', 'sigmaloop.budget', 'sigmaloop.slots', 'sigmaloop.proposer', 'sigmaloop.llm.baseUrl', 'sigmaloop.llm.model']) {
    assert.ok(props[key], key);
    assert.equal(props[key].scope, 'resource', key);
    assert.ok((props[key].markdownDescription ?? props[key].description ?? '').length > 20, key);
  }
});

test('activation, bundle entry, trust and diff-editor menus', () => {
  assert.equal(pkg.main, './out/extension.js');
  assert.ok(pkg.activationEvents.includes('workspaceContains:**/sigmaloop.toml'));
  assert.equal(pkg.capabilities.untrustedWorkspaces.supported, 'limited');
  assert.ok(pkg.capabilities.untrustedWorkspaces.restrictedConfigurations?.includes('sigmaloop.pythonPath'));
  const title = pkg.contributes.menus['editor/title'];
  for (const c of ['sigmaloop.accept', 'sigmaloop.reject']) {
    const item = title.find((m) => m.command === c);
    assert.ok(item?.when?.includes('resourceScheme == sigmaloop-exp'), c);
  }
});
