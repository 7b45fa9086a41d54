// ESLint (flat config): the recommended JS rules, plus typescript-eslint's type-aware
// recommended set for the TypeScript sources and tests. The type-aware rules matter here:
// no-floating-promises and no-misused-promises catch a rejected promise that would surface in
// the host page as an unhandled rejection, which the SDK must never cause.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/'] },
  js.configs.recommended,
  {
    files: ['**/*.ts'],
    extends: [tseslint.configs.recommendedTypeChecked],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // `_`-prefixed members are private and renamed by the minifier; unused args are allowed as `_`.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      eqeqeq: ['error', 'smart'],
      // The storage backends wrap synchronous calls (localStorage) in async functions on
      // purpose: a synchronous throw (QuotaExceededError) becomes a rejection like IndexedDB's.
      '@typescript-eslint/require-await': 'off',
      'no-console': 'error',
    },
  },
  {
    files: ['test/**/*.ts'],
    rules: {
      // Tests poke at response bodies and mocks.
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
      // node:test's test() returns a promise that the runner itself awaits.
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: 'test' }] },
      ],
      'no-console': 'off',
    },
  },
  {
    files: ['scripts/**/*.mjs', 'test/browser/**/*.mjs', 'eslint.config.mjs'],
    languageOptions: {
      globals: { console: 'readonly', process: 'readonly', Buffer: 'readonly', URL: 'readonly' },
    },
  },
);
