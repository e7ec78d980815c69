// Child processes in the suites (consumer workers, servers measured from outside) run the built
// package from dist/: build it once before any suite starts.
const { execSync } = require('node:child_process');

module.exports = async function globalSetup() {
  execSync('npx tsc -p tsconfig.build.json', { cwd: __dirname + '/../..', stdio: 'inherit' });
};
