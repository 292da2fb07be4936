// The predictor's try-it page. Every URL is relative to the page, so it works
// on a sub-path behind a proxy; text from the server only ever goes into
// textContent, never into HTML.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $('form');
  const fileInput = $('file');
  const drop = $('drop');
  const preview = $('preview');
  const button = $('predict');
  const keyInput = $('api-key');
  let kind = 'image';
  let chosen = null;

  function headers() {
    const key = keyInput.value.trim();
    return key ? { Authorization: 'Bearer ' + key } : {};
  }

  function percent(p) {
    return (p * 100).toFixed(1) + '%';
  }

  // The predictor and the router answer errors as {error, code, status}; a
  // proxy in between may answer something else, shown as it came.
  async function describeError(response) {
    const text = await response.text();
    let message = text.trim() || response.statusText;
    let code = '';
    try {
      const body = JSON.parse(text);
      if (body && typeof body.error === 'string') {
        message = body.error;
        code = typeof body.code === 'string' ? body.code : '';
      }
    } catch (_) { /* not JSON: keep the text */ }
    return 'HTTP ' + response.status + (code ? ' ' + code : '') + ': ' + message;
  }

  function showError(element, message) {
    element.textContent = message;
    element.hidden = !message;
  }

  function updateButton() {
    button.disabled = kind === 'image' ? chosen === null : $('row').value.trim() === '';
  }

  async function loadModel() {
    showError($('model-error'), '');
    let response;
    try {
      response = await fetch('ui/model', { headers: headers(), cache: 'no-store' });
    } catch (e) {
      showError($('model-error'), 'Cannot reach the server: ' + e.message);
      return;
    }
    if (!response.ok) {
      let message = await describeError(response);
      if (response.status === 401) {
        message = 'This server needs an API key: enter it above. (' + message + ')';
      }
      showError($('model-error'), message);
      return;
    }
    const model = await response.json();
    $('model-name').textContent = model.name;
    $('model-version').textContent = model.version;
    $('model-input').textContent = model.kind + ' [' + model.inputShape.join(' × ') + ']';
    const task = model.task || 'classification';
    $('model-classes').textContent = task === 'regression'
      ? 'regression, ' + String(Math.max(1, model.classes)) + ' output(s)'
      : String(model.classes) + (task === 'classification' ? '' : ' (' + task + ')');
    kind = model.kind;
    $('image-input').hidden = kind !== 'image';
    $('row-input').hidden = kind === 'image';
    updateButton();
  }

  async function choose(file) {
    chosen = file || null;
    updateButton();
    preview.hidden = true;
    if (!chosen) return;
    // Drawn on a canvas rather than shown through a blob: URL, which the
    // page's Content-Security-Policy (img-src 'self') would refuse.
    try {
      const bitmap = await createImageBitmap(chosen);
      const scale = Math.min(preview.width / bitmap.width, preview.height / bitmap.height);
      const w = Math.max(1, Math.round(bitmap.width * scale));
      const h = Math.max(1, Math.round(bitmap.height * scale));
      const ctx = preview.getContext('2d');
      ctx.imageSmoothingEnabled = false;
      ctx.clearRect(0, 0, preview.width, preview.height);
      ctx.drawImage(bitmap, (preview.width - w) / 2, (preview.height - h) / 2, w, h);
      preview.hidden = false;
    } catch (_) {
      // Not an image the browser can draw: the server says why on Predict.
    }
  }

  function answerText(body) {
    if (body.values) {
      if (body.outputs) {
        return Object.entries(body.outputs).map(([name, v]) => name + ' = ' + v).join(', ');
      }
      return body.values.join(', ');
    }
    if (body.labels) {
      return body.labels.length ? body.labels.join(', ') : '(no class above the threshold)';
    }
    return body.label;
  }

  function render(body, response, millis) {
    $('label').textContent = answerText(body);
    const scored = typeof body.confidence === 'number';
    $('confidence-bar').parentElement.hidden = !scored;
    $('top').hidden = !scored;
    if (scored) {
      $('confidence-bar').value = body.confidence;
      $('confidence').textContent = percent(body.confidence);
    }
    const rows = $('top').tBodies[0];
    rows.replaceChildren();
    for (const score of body.top || []) {
      const row = rows.insertRow();
      row.insertCell().textContent = score.label;
      row.insertCell().textContent = percent(score.confidence);
      const bar = document.createElement('meter');
      bar.min = 0;
      bar.max = 1;
      bar.value = score.confidence;
      bar.setAttribute('aria-label', score.label);
      row.insertCell().appendChild(bar);
    }
    $('latency').textContent = millis.toFixed(0) + ' ms (round trip)';
    const variant = response.headers.get('x-hone-variant');
    $('variant').textContent = variant ? variant : 'this predictor (no router)';
    $('served-model').textContent = body.model + ' ' + body.version;
    $('result').hidden = false;
  }

  async function predict(event) {
    event.preventDefault();
    showError($('error'), '');
    $('result').hidden = true;
    const init = { method: 'POST', headers: headers(), cache: 'no-store' };
    if (kind === 'image') {
      if (!chosen) return;
      init.body = new FormData();
      init.body.append('file', chosen, chosen.name);
    } else {
      init.headers['Content-Type'] = 'application/json';
      init.body = $('row').value;
    }
    button.disabled = true;
    button.textContent = 'Predicting…';
    const started = performance.now();
    try {
      const response = await fetch('predict', init);
      const millis = performance.now() - started;
      if (!response.ok) {
        showError($('error'), await describeError(response));
      } else {
        render(await response.json(), response, millis);
      }
    } catch (e) {
      showError($('error'), 'Cannot reach the server: ' + e.message);
    } finally {
      button.textContent = 'Predict';
      updateButton();
    }
  }

  fileInput.addEventListener('change', () => choose(fileInput.files[0]));
  $('row').addEventListener('input', updateButton);
  keyInput.addEventListener('change', loadModel);
  form.addEventListener('submit', predict);
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    if (e.dataTransfer.files.length > 0) {
      fileInput.files = e.dataTransfer.files;
      choose(e.dataTransfer.files[0]);
    }
  });
  loadModel();
})();
