// The page's script: Uppy with the Dashboard and @uppy/tus, bundled for the browser by esbuild
// (bundle-uppy.mjs) when the suite starts. The query string gives the TUS endpoint (another
// origin than the page's) and the options of the run.
import Uppy from '@uppy/core';
import Dashboard from '@uppy/dashboard';
import Tus from '@uppy/tus';
import '@uppy/core/css/style.min.css';
import '@uppy/dashboard/css/style.min.css';

const params = new URLSearchParams(window.location.search);
const endpoint = params.get('endpoint');
const chunkSize = params.has('chunkSize') ? Number(params.get('chunkSize')) : Infinity;
const retryDelays = params.has('noRetry') ? [] : [0, 300, 1000, 3000];

const uppy = new Uppy({ id: 'tussi', autoProceed: false })
  .use(Dashboard, {
    inline: true,
    target: '#uppy',
    width: 760,
    height: 460,
    showProgressDetails: true,
    proudlyDisplayPoweredByUppy: false,
  })
  .use(Tus, { endpoint, chunkSize, retryDelays, limit: 2 });

// What the test reads back.
window.tussiTest = { result: null, errors: [] };
uppy.on('upload-error', (file, error) => {
  window.tussiTest.errors.push({ name: file?.name, error: String(error) });
});
uppy.on('complete', (result) => {
  window.tussiTest.result = {
    successful: (result.successful ?? []).map((file) => ({
      name: file.name,
      size: file.size,
      uploadURL: file.uploadURL ?? file.response?.uploadURL ?? null,
    })),
    failed: (result.failed ?? []).map((file) => ({ name: file.name, error: String(file.error) })),
  };
});
window.uppy = uppy;
