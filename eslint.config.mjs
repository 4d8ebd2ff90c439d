// Lint: typescript-eslint's type-checked recommended rules over the client, webview, tests and
// bench scripts (tsc --noEmit runs first in `npm run lint`).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['out/**', 'node_modules/**', '.tools/**', 'artifacts/**', '.venv/**', 'server/**', 'trainer/**'] },
  js.configs.recommended,
  {
    files: ['**/*.ts'],
    extends: [...tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: false }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      eqeqeq: ['error', 'always'],
      'no-restricted-properties': [
        'error',
        { property: 'innerHTML', message: 'Render journal/agent strings with textContent.' },
        { property: 'outerHTML', message: 'Render journal/agent strings with textContent.' },
        { property: 'insertAdjacentHTML', message: 'Render journal/agent strings with textContent.' },
      ],
    },
  },
  {
    // node:test's test() returns a promise the runner awaits
    files: ['tests/extension/**/*.ts'],
    rules: { '@typescript-eslint/no-floating-promises': 'off' },
  },
  {
    files: ['**/*.mjs'],
    languageOptions: {
      globals: {
        process: 'readonly', console: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly',
        URL: 'readonly', performance: 'readonly', window: 'readonly', document: 'readonly',
        Buffer: 'readonly', setInterval: 'readonly', clearInterval: 'readonly',
        requestAnimationFrame: 'readonly', MessageEvent: 'readonly',
      },
    },
  },
);
