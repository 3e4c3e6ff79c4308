// The self-service page: one person, one flow, driven through the portal API
// (docs/http-api.md). No framework, no storage: the flow's token lives only
// in the `flow` variable below — never in the URL, storage or a cookie — and
// is forgotten when the flow ends or the page is left. Every text comes
// from the catalog the gateway embedded in the page, in the page's
// language (`<html lang>`, chosen by `?lang=` or Accept-Language).
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const lang = document.documentElement.lang || 'en';
  let catalog = {};
  try {
    catalog = JSON.parse($('catalog').textContent);
  } catch {
    catalog = {};
  }
  /** The catalog's text for `key`, with each `{name}` replaced from `args`. */
  function t(key, args = {}) {
    const text = catalog[key] ?? key;
    return text.replace(/\{(\w+)\}/g, (m, name) => (name in args ? String(args[name]) : m));
  }
  /** Whether the catalog has `key`. */
  const has = (key) => Object.prototype.hasOwnProperty.call(catalog, key);
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
    // The flow keeps this language: its notices, rules and prompts follow it.
    const headers = { Accept: 'application/json', 'Accept-Language': lang };
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
      throw new Problem('network', t('problem.network'));
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      const title = data && typeof data.title === 'string' ? data.title
        : t('problem.http', { status: response.status });
      const code = data && typeof data.code === 'string' ? data.code : 'http';
      throw new Problem(code, title, retrySeconds(response.headers.get('Retry-After')));
    }
    return data;
  }

  /** What to tell the person about a problem, in the page's language. */
  function problemText(p) {
    if (p.code === 'rate-limited') {
      const s = p.retryAfter;
      const when = !s ? t('when.moment')
        : s === 1 ? t('when.second')
          : s < 90 ? t('when.seconds', { n: s })
            : t('when.minutes', { n: Math.ceil(s / 60) });
      return t('problem.rate-limited', { when });
    }
    return has(`problem.${p.code}`) ? t(`problem.${p.code}`) : p.title;
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
      delete noticeBox.dataset.kind;
      return;
    }
    noticeBox.dataset.kind = kind;
    // A new node each time, so that the same message twice is announced twice.
    noticeBox.replaceChildren(el('p', { 'data-kind': kind }, text));
    noticeBox.className = `notice notice-${kind}`;
  }

  /** Shows or hides where to get help (failure and lockout screens). */
  function helpdesk(on) {
    const box = $('helpdesk');
    if (box) box.hidden = !on;
  }

  /** Shows one step under `title`; true if the person is on a new screen. */
  function show(step, title, key = step) {
    helpdesk(false);
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
      say(t('problem.page'));
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
      show('done', t('cannot-continue'));
      $('receipt-box').hidden = true;
      say(problemText(p));
      helpdesk(true);
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
    return t(purposeOf($('workflow').value) === 'enrollment' ? 'title.enrollment' : 'title.reset');
  }

  /** Retitles the start screen after a choice. */
  function retitle() {
    heading.textContent = startTitle();
    document.title = heading.textContent;
  }

  /**
   * Offers the workflows of `purpose` in the select (by their titles for
   * people; the name when a workflow has none), keeping `wanted` if it is
   * one of them; the select shows only when there is a choice.
   */
  function offer(purpose, wanted) {
    const select = $('workflow');
    const ws = [...offered.values()].filter((w) => w.purpose === purpose);
    select.replaceChildren(...ws.map((w) => el('option', { value: w.name }, w.title || w.name)));
    if (wanted && ws.some((w) => w.name === wanted)) select.value = wanted;
    $('workflow-label').textContent = t(`start.workflow.${purpose}`);
    $('workflow-row').hidden = ws.length < 2;
    for (const input of document.querySelectorAll('input[name="purpose"]')) input.checked = input.value === purpose;
    retitle();
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
    for (const purpose of ['reset', 'enrollment']) {
      for (const w of list.workflows.filter((x) => x.purpose === purpose)) offered.set(w.name, w);
    }
    if (offered.size === 0) {
      say(t('start.none'));
      helpdesk(true);
      return;
    }
    const purposes = new Set([...offered.values()].map((w) => w.purpose));
    const wanted = new URLSearchParams(location.search).get('workflow');
    const first = offered.has(wanted) ? purposeOf(wanted) : (purposes.has('reset') ? 'reset' : 'enrollment');
    // Resetting and registering are asked apart, and only when both exist.
    $('purpose-row').hidden = purposes.size < 2;
    for (const input of document.querySelectorAll('input[name="purpose"]')) {
      input.addEventListener('change', () => offer(input.value, null));
    }
    $('workflow').addEventListener('change', retitle);
    offer(first, wanted);
    show('start', startTitle());
    $('start-fields').disabled = false;
  }

  $('start-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = $('user');
    const user = input.value.trim();
    // Said once, next to the field (the notice would repeat it).
    fieldError(input, user ? [] : [t('start.user-missing')]);
    if (!user) {
      say('');
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
    const fresh = show('authenticate', t('authenticate.title'));
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
      fieldError(input, [t('authenticate.missing')]);
      say('');
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
      input.append(el('option', { value: '' }, t('gate.choose')), ...f.choices.map((c) => el('option', { value: c }, c)));
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
      'aria-label': t('gate.qr-code'), 'shape-rendering': 'crispEdges', 'data-modules': n,
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
    $('gate-submit').textContent = t(view.state === 'enrolling' ? 'button.save' : 'button.continue');
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
    inputs.forEach((input) => fieldError(input, empty.includes(input) ? [t('gate.required')] : []));
    if (empty.length) {
      say(t(empty.length === 1 ? 'gate.fill-one' : 'gate.fill-many'));
      empty[0].focus();
      return;
    }
    const answers = Object.fromEntries(inputs.map((input) => [input.name, input.value]));
    const { gate, round } = prompt;
    run(async () => render(await api('POST', `/v1/flows/${flow.id}/answers`, { gate, round, answers })));
  });

  function showPassword(view) {
    const fresh = show('password', t('password.title'));
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
    fieldError(again, mismatch ? [t('password.mismatch')] : []);
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
    // Each mistake is said once, next to its field.
    if (!pw.value) {
      fieldError(pw, [t('password.missing')]);
      say('');
      pw.focus();
      return;
    }
    fieldError(pw, []);
    if (!again.value || !checkConfirmation()) {
      if (!again.value) fieldError(again, [t('password.again-missing')]);
      say('');
      again.focus();
      return;
    }
    const password = pw.value;
    run(async () => render(await api('POST', `/v1/flows/${flow.id}/password`, { password })));
  });

  // ---- The outcome ----

  /** Each outcome's kind of notice; its title and message are `outcome.KEY.*`. */
  const OUTCOMES = {
    completed: 'success',
    'completed-enrollment': 'success',
    failed: 'error',
    locked: 'error',
    expired: 'error',
    committing: 'info',
    interrupted: 'info',
  };
  /** Outcomes after which the person may need the helpdesk. */
  const NEEDS_HELP = ['failed', 'locked', 'interrupted'];
  /** Notices that only repeat the outcome's title: its message is shown instead. */
  const REPEATS_TITLE = ['locked', 'expired'];

  function receiptRow(target, name, status) {
    const li = el('li', { 'data-target': target, 'data-status': status });
    if (target === 'sync') li.dataset.id = name;
    const label = has(`status.${status}`) ? t(`status.${status}`) : status;
    li.append(el('span', { class: 'target' }, `${name}:`), ' ', el('span', { class: 'status' }, label));
    return li;
  }

  function showOutcome(view) {
    const enrollment = flow?.purpose === 'enrollment';
    const key = view.state === 'completed' && enrollment ? 'completed-enrollment' : view.state;
    const known = key in OUTCOMES ? key : 'failed';
    const [title, message, kind] = [t(`outcome.${known}.title`), t(`outcome.${known}.message`), OUTCOMES[known]];
    // The flow is over: its token is of no more use.
    flow = null;
    show('done', title, `done:${key}`);
    const r = view.receipt;
    const list = $('receipt');
    list.replaceChildren();
    if (r) {
      list.append(receiptRow('directory', t('receipt.directory'), r.directory));
      for (const s of r.sync) list.append(receiptRow('sync', s.id, s.status));
      if (r.vpn) list.append(receiptRow('vpn', t('receipt.vpn'), r.vpn));
    }
    $('receipt-box').hidden = !r;
    const own = kind === 'success' || !view.notice || REPEATS_TITLE.includes(view.notice.code);
    say(own ? message : view.notice.message, kind);
    helpdesk(NEEDS_HELP.includes(known));
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

  // A message about what was typed before is stale once the person types
  // again: it goes, with the marks on the field being corrected.
  main.addEventListener('input', (event) => {
    const input = event.target;
    if (!(input instanceof HTMLInputElement || input instanceof HTMLSelectElement)) return;
    if (input.name === 'purpose' || input.id === 'show-password') return;
    if (noticeBox.dataset.kind && noticeBox.dataset.kind !== 'success') say('');
    linkNotice(input, false);
    // The confirmation field keeps its own live check.
    if (input.id !== 'confirm-password' && $(`${input.id}-error`)) fieldError(input, []);
  });

  $('restart').addEventListener('click', restart);
  $('start-over').addEventListener('click', restart);

  loadWorkflows();
})();
