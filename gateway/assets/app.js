// The self-service page: one person, one flow, driven through the portal API
// (docs/http-api.md). No framework, no storage: the flow's token lives only
// in the `flow` variable below — never in the URL, storage or a cookie — and
// is forgotten when the flow ends or the page is left.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const main = $('main');
  const heading = $('heading');
  const noticeBox = $('notice');
  const STEPS = ['start', 'authenticate', 'gate', 'password', 'done'];

  /** The flow in progress: { id, token, user, purpose }, or null. */
  let flow = null;
  /** The workflows offered, by name. */
  const offered = new Map();
  /** The prompt being answered: { gate, round }. */
  let prompt = null;
  /** What the person sees (`gate:ID`, `password`…): a new one moves focus. */
  let screen = null;
  /** A request is under way: further submits are ignored. */
  let busy = false;

  // ---- The API ----

  /** A refusal from the gateway (`application/problem+json`) or the network. */
  class Problem extends Error {
    constructor(code, title, retryAfter) {
      super(title);
      this.code = code;
      this.title = title;
      this.retryAfter = retryAfter;
    }
  }

  /** Seconds to wait from a Retry-After header (seconds or an HTTP date). */
  function retrySeconds(value) {
    if (!value) return null;
    if (/^\d+$/.test(value.trim())) return Number(value.trim());
    const at = Date.parse(value);
    return Number.isNaN(at) ? null : Math.max(1, Math.ceil((at - Date.now()) / 1000));
  }

  /** Calls the API; resolves to the JSON body, rejects with a Problem. */
  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (flow) headers.Authorization = `Bearer ${flow.token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        redirect: 'error',
      });
    } catch {
      throw new Problem('network', 'The service cannot be reached. Check your connection and try again.');
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      const title = data && typeof data.title === 'string' ? data.title
        : `Something went wrong (error ${response.status}). Try again.`;
      const code = data && typeof data.code === 'string' ? data.code : 'http';
      throw new Problem(code, title, retrySeconds(response.headers.get('Retry-After')));
    }
    return data;
  }

  /** What to tell the person about a problem. */
  function problemText(p) {
    if (p.code === 'rate-limited') {
      const s = p.retryAfter;
      const when = !s ? 'in a moment'
        : s < 90 ? `in ${s} second${s === 1 ? '' : 's'}`
          : `in ${Math.ceil(s / 60)} minutes`;
      return `Too many attempts. Try again ${when}.`;
    }
    return p.title;
  }

  // ---- What the person sees ----

  /** Creates an element with attributes (never inline style) and text. */
  function el(tag, attrs = {}, text = null) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== null) node.textContent = text;
    return node;
  }

  /** Announces `text` in the live region; `kind` is error, info or success. */
  function say(text, kind = 'error') {
    if (!text) {
      noticeBox.replaceChildren();
      noticeBox.className = 'notice';
      return;
    }
    // A new node each time, so that the same message twice is announced twice.
    noticeBox.replaceChildren(el('p', { 'data-kind': kind }, text));
    noticeBox.className = `notice notice-${kind}`;
  }

  /** Shows one step under `title`; true if the person is on a new screen. */
  function show(step, title, key = step) {
    for (const s of STEPS) $(`step-${s}`).hidden = s !== step;
    $('start-over-row').hidden = step === 'start' || step === 'done';
    main.dataset.step = step;
    heading.textContent = title;
    document.title = title;
    const fresh = screen !== key;
    screen = key;
    return fresh;
  }

  /** Marks `input` invalid with `messages` next to it (none: valid again). */
  function fieldError(input, messages) {
    const list = [].concat(messages || []);
    const box = $(`${input.id}-error`);
    if (box.tagName === 'UL') {
      box.replaceChildren(...list.map((m) => el('li', {}, m)));
    } else {
      box.textContent = list.join(' ');
    }
    box.hidden = list.length === 0;
    if (list.length) input.setAttribute('aria-invalid', 'true');
    else input.removeAttribute('aria-invalid');
  }

  /** Links `input` to the live region (or unlinks it). */
  function linkNotice(input, on) {
    const ids = (input.getAttribute('aria-describedby') || '').split(' ').filter((id) => id && id !== 'notice');
    if (on) ids.push('notice');
    input.setAttribute('aria-describedby', ids.join(' '));
    if (on) input.setAttribute('aria-invalid', 'true');
  }

  /** The policy's sentences start lowercase: make each a sentence. */
  function sentence(text) {
    const s = text.charAt(0).toUpperCase() + text.slice(1);
    return /[.!?]$/.test(s) ? s : `${s}.`;
  }

  /** Runs a request for a submit: one at a time, problems shown. */
  async function run(action) {
    if (busy) return;
    busy = true;
    main.setAttribute('aria-busy', 'true');
    try {
      await action();
    } catch (p) {
      await onProblem(p);
    } finally {
      busy = false;
      main.removeAttribute('aria-busy');
    }
  }

  async function onProblem(p) {
    if (!(p instanceof Problem)) {
      say('Something went wrong on this page. Reload it and try again.');
      throw p;
    }
    if (flow && ['stale-step', 'wrong-state', 'flow-ended', 'outcome-unknown'].includes(p.code)) {
      // The flow moved on (another tab, a replay): show where it is now.
      try {
        render(await api('GET', `/v1/flows/${flow.id}`));
        if (!noticeBox.textContent) say(problemText(p), 'info');
        return;
      } catch (again) {
        if (!(again instanceof Problem)) throw again;
        p = again;
      }
    }
    if (flow && ['flow-not-found', 'workflow-changed'].includes(p.code)) {
      flow = null;
      show('done', 'This reset cannot continue');
      $('receipt-box').hidden = true;
      say(problemText(p));
      heading.focus();
      return;
    }
    say(problemText(p));
  }

  // ---- Start ----

  function purposeOf(name) {
    return offered.get(name)?.purpose ?? 'reset';
  }

  function startTitle() {
    return purposeOf($('workflow').value) === 'enrollment' ? 'Set up password reset' : 'Reset your password';
  }

  async function loadWorkflows() {
    let list;
    try {
      list = await api('GET', '/v1/workflows');
    } catch (p) {
      if (!(p instanceof Problem)) throw p;
      say(problemText(p));
      return;
    }
    const select = $('workflow');
    const groups = [
      ['reset', 'Reset a password'],
      ['enrollment', 'Set up password reset'],
    ];
    for (const [purpose] of groups) {
      for (const w of list.workflows.filter((x) => x.purpose === purpose)) offered.set(w.name, w);
    }
    if (offered.size === 0) {
      say('Self-service is not set up here. Contact your helpdesk.');
      return;
    }
    const purposes = new Set([...offered.values()].map((w) => w.purpose));
    for (const [purpose, label] of groups) {
      const ws = [...offered.values()].filter((w) => w.purpose === purpose);
      if (ws.length === 0) continue;
      const parent = purposes.size > 1 ? select.appendChild(el('optgroup', { label })) : select;
      for (const w of ws) parent.append(el('option', { value: w.name }, w.description || w.name));
    }
    const wanted = new URLSearchParams(location.search).get('workflow');
    if (wanted && offered.has(wanted)) select.value = wanted;
    $('workflow-row').hidden = offered.size < 2;
    select.addEventListener('change', () => {
      heading.textContent = startTitle();
      document.title = heading.textContent;
    });
    show('start', startTitle());
    $('start-fields').disabled = false;
  }

  $('start-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = $('user');
    const user = input.value.trim();
    fieldError(input, user ? [] : ['Enter your user name.']);
    if (!user) {
      say('Enter your user name.');
      input.focus();
      return;
    }
    const workflow = $('workflow').value;
    run(async () => {
      flow = null;
      const view = await api('POST', '/v1/flows', { workflow, user });
      flow = { id: view.id, token: view.token, user, purpose: purposeOf(workflow) };
      render(view);
    });
  });

  // ---- The flow's steps ----

  function render(view) {
    switch (view.state) {
      case 'gate':
      case 'enrolling':
        return showGate(view);
      case 'authenticating':
        return showAuthenticate(view);
      case 'awaiting-password':
        return showPassword(view);
      default:
        return showOutcome(view);
    }
  }

  function showAuthenticate(view) {
    const input = $('current-password');
    const fresh = show('authenticate', 'Confirm it is you');
    input.value = '';
    fieldError(input, []);
    if (view.notice) {
      say(view.notice.message);
      linkNotice(input, true);
      input.focus();
    } else {
      say('');
      linkNotice(input, false);
      if (fresh) heading.focus();
    }
  }

  $('authenticate-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = $('current-password');
    if (!input.value) {
      fieldError(input, ['Enter your current password.']);
      say('Enter your current password.');
      input.focus();
      return;
    }
    const password = input.value;
    run(async () => render(await api('POST', `/v1/flows/${flow.id}/authenticate`, { password })));
  });

  /** One input of a prompt, by its kind. */
  function fieldFor(f, i) {
    const id = `field-${i}`;
    let input;
    if (f.kind === 'choice') {
      input = el('select');
      input.append(el('option', { value: '' }, 'Choose…'), ...f.choices.map((c) => el('option', { value: c }, c)));
    } else {
      input = el('input', {
        type: f.kind === 'secret' ? 'password' : 'text',
        autocomplete: f.kind === 'code' ? 'one-time-code' : 'off',
        autocapitalize: 'none',
        spellcheck: 'false',
        maxlength: f.max_length,
      });
      if (f.kind === 'code') input.setAttribute('inputmode', 'numeric');
    }
    for (const [k, v] of Object.entries({ id, name: f.name, 'data-field': f.name, 'aria-describedby': `${id}-error` })) {
      input.setAttribute(k, v);
    }
    input.required = true;
    const row = el('div', { class: 'field' });
    row.append(el('label', { for: id }, f.label), input, el('span', { id: `${id}-error`, class: 'field-error', hidden: '' }));
    return row;
  }

  const SVG = 'http://www.w3.org/2000/svg';
  /** Light modules left around a QR code, as its standard asks. */
  const QUIET = 4;

  /**
   * A QR code as SVG from the modules the gateway computed (rows of `1`
   * dark and `0` light): one path of unit squares on a light square with
   * the quiet zone. Nothing is fetched, no library, no inline style.
   */
  function qrCode(modules) {
    const n = modules.length;
    const size = n + 2 * QUIET;
    const svg = document.createElementNS(SVG, 'svg');
    for (const [k, v] of Object.entries({
      viewBox: `0 0 ${size} ${size}`, class: 'qr-code', role: 'img',
      'aria-label': 'QR code', 'shape-rendering': 'crispEdges', 'data-modules': n,
    })) svg.setAttribute(k, String(v));
    const light = document.createElementNS(SVG, 'rect');
    for (const [k, v] of Object.entries({ width: size, height: size, class: 'qr-light' })) light.setAttribute(k, String(v));
    let d = '';
    modules.forEach((row, y) => {
      for (let x = 0; x < row.length; x += 1) {
        if (row[x] === '1') d += `M${x + QUIET} ${y + QUIET}h1v1h-1z`;
      }
    });
    const dark = document.createElementNS(SVG, 'path');
    dark.setAttribute('d', d);
    dark.setAttribute('class', 'qr-dark');
    svg.append(light, dark);
    const figure = el('figure', { class: 'display-qr', 'data-display': 'qr-code' });
    figure.append(svg);
    return figure;
  }

  /** One display item of a prompt: a paragraph, text to copy, a QR code. */
  function displayFor(item) {
    if (item.type === 'code') {
      const p = el('p', { class: 'display-code', 'data-display': 'code' });
      p.append(el('code', {}, item.text));
      return p;
    }
    if (item.type === 'qr-code' && Array.isArray(item.modules) && item.modules.length > 0) {
      return qrCode(item.modules);
    }
    // Text, and a QR code the gateway could not draw: its text.
    return el('p', { class: 'display-text', 'data-display': item.type === 'text' ? 'text' : 'qr-text' }, item.text);
  }

  function gateInputs() {
    return [...$('gate-fields').querySelectorAll('input, select')];
  }

  function showGate(view) {
    const p = view.prompt;
    const fresh = show('gate', p.title, `gate:${p.gate}`);
    prompt = { gate: p.gate, round: p.round };
    const help = $('gate-help');
    help.textContent = p.help || '';
    // A help line that only repeats the label says nothing new.
    help.hidden = !p.help || p.fields.some((f) => f.label === p.help);
    const items = p.display || [];
    $('gate-display').replaceChildren(...items.map(displayFor));
    $('gate-display').hidden = items.length === 0;
    $('gate-fields').replaceChildren(...p.fields.map(fieldFor));
    $('gate-submit').textContent = view.state === 'enrolling' ? 'Save' : 'Continue';
    const inputs = gateInputs();
    if (view.notice) {
      say(view.notice.message);
      inputs.forEach((input) => linkNotice(input, true));
      inputs[0]?.focus();
    } else {
      say('');
      if (fresh) heading.focus();
      else inputs[0]?.focus();
    }
  }

  $('gate-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const inputs = gateInputs();
    const empty = inputs.filter((input) => input.value.trim() === '');
    inputs.forEach((input) => fieldError(input, empty.includes(input) ? ['This is required.'] : []));
    if (empty.length) {
      say(empty.length === 1 ? 'Fill in the highlighted field.' : 'Fill in the highlighted fields.');
      empty[0].focus();
      return;
    }
    const answers = Object.fromEntries(inputs.map((input) => [input.name, input.value]));
    const { gate, round } = prompt;
    run(async () => render(await api('POST', `/v1/flows/${flow.id}/answers`, { gate, round, answers })));
  });

  function showPassword(view) {
    const fresh = show('password', 'Choose a new password');
    const pw = $('new-password');
    const again = $('confirm-password');
    if (fresh) {
      const rules = view.password_policy?.rules ?? [];
      $('password-rules').replaceChildren(...rules.map((r) => el('li', {}, r)));
      $('password-user').value = flow?.user ?? '';
    }
    pw.value = '';
    again.value = '';
    fieldError(again, []);
    if (view.notice) {
      say(view.notice.message);
      const why = view.violations.length ? view.violations : [view.notice];
      fieldError(pw, why.map((v) => sentence(v.message)));
      $('new-password-error').querySelectorAll('li').forEach((li, i) => {
        if (why[i].code) li.dataset.code = why[i].code;
      });
      pw.focus();
    } else {
      say('');
      fieldError(pw, []);
      if (fresh) heading.focus();
    }
  }

  function checkConfirmation() {
    const pw = $('new-password');
    const again = $('confirm-password');
    const mismatch = again.value !== '' && pw.value !== again.value;
    fieldError(again, mismatch ? ['The two passwords do not match. Type the same password twice.'] : []);
    return !mismatch;
  }

  $('confirm-password').addEventListener('change', checkConfirmation);
  $('confirm-password').addEventListener('input', () => {
    // Clear a mismatch as soon as it is fixed; report new ones on leaving.
    if ($('confirm-password').getAttribute('aria-invalid')) checkConfirmation();
  });

  $('show-password').addEventListener('change', (event) => {
    const type = event.target.checked ? 'text' : 'password';
    $('new-password').type = type;
    $('confirm-password').type = type;
  });

  $('password-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const pw = $('new-password');
    const again = $('confirm-password');
    if (!pw.value) {
      fieldError(pw, ['Enter a new password.']);
      say('Enter a new password.');
      pw.focus();
      return;
    }
    fieldError(pw, []);
    if (!again.value || !checkConfirmation()) {
      if (!again.value) fieldError(again, ['Type the new password again.']);
      say(again.value ? 'The two passwords do not match.' : 'Type the new password again.');
      again.focus();
      return;
    }
    const password = pw.value;
    run(async () => render(await api('POST', `/v1/flows/${flow.id}/password`, { password })));
  });

  // ---- The outcome ----

  const OUTCOMES = {
    completed: ['Your password has been changed', 'Use your new password from now on.', 'success'],
    'completed-enrollment': ['Your reset options are saved', 'You can now reset your password yourself when you need to.', 'success'],
    failed: ['Your password was not changed', 'Something went wrong. Start again, or contact your helpdesk.', 'error'],
    locked: ['Too many attempts', 'Try again later, or contact your helpdesk.', 'error'],
    expired: ['This reset has expired', 'It took too long. Please start again.', 'error'],
    committing: ['The outcome is not known yet', 'Try signing in with your new password. If it does not work, start again.', 'info'],
    interrupted: ['We cannot tell whether your password was changed', 'The service stopped while your new password was being set. Try signing in with your new password. If it does not work, start again.', 'info'],
  };

  const STATUS = { ok: 'Updated', failed: 'Failed', pending: 'Pending', unknown: 'Unknown' };

  function receiptRow(target, name, status) {
    const li = el('li', { 'data-target': target, 'data-status': status });
    if (target === 'sync') li.dataset.id = name;
    li.append(el('span', { class: 'target' }, `${name}:`), ' ', el('span', { class: 'status' }, STATUS[status] ?? status));
    return li;
  }

  function showOutcome(view) {
    const enrollment = flow?.purpose === 'enrollment';
    const key = view.state === 'completed' && enrollment ? 'completed-enrollment' : view.state;
    const [title, message, kind] = OUTCOMES[key] ?? OUTCOMES.failed;
    // The flow is over: its token is of no more use.
    flow = null;
    show('done', title, `done:${key}`);
    const r = view.receipt;
    const list = $('receipt');
    list.replaceChildren();
    if (r) {
      list.append(receiptRow('directory', 'Directory', r.directory));
      for (const s of r.sync) list.append(receiptRow('sync', s.id, s.status));
      if (r.vpn) list.append(receiptRow('vpn', 'VPN', r.vpn));
    }
    $('receipt-box').hidden = !r;
    say(kind === 'success' || !view.notice ? message : view.notice.message, kind);
    heading.focus();
  }

  function restart() {
    // The abandoned flow, if any, expires on its own.
    flow = null;
    prompt = null;
    screen = null;
    for (const id of ['new-password', 'confirm-password', 'current-password']) $(id).value = '';
    say('');
    show('start', startTitle());
    heading.focus();
  }

  $('restart').addEventListener('click', restart);
  $('start-over').addEventListener('click', restart);

  loadWorkflows();
})();
