// A resetgate gate in JavaScript, built with componentize-js against the
// contract's own `gate` world (plugin-sdk/wit): the person types the last
// digits of a phone number the directory holds for them (attribute `mobile`
// by default). Digits only: spaces, dashes and a leading `+` are ignored on
// both sides. The comparison looks at every digit whatever the input, and a
// user without the attribute (or an unknown user) fails the same way.
//
// Config (the JSON Schema below): `label` (what the person reads),
// optional `attribute` (default `mobile`) and `digits` (how many of the last
// digits to ask for, 4 to 8, default 4).
//
// It imports one capability, the always-granted `log`, to note a failure
// for the admin (never what the person typed).

import { write } from 'resetgate:plugin/log@0.2.1';

const SCHEMA = JSON.stringify({
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  type: 'object',
  additionalProperties: false,
  required: ['label'],
  properties: {
    label: { type: 'string', minLength: 1, maxLength: 200 },
    attribute: { type: 'string', minLength: 1, maxLength: 128, default: 'mobile' },
    digits: { type: 'integer', minimum: 4, maximum: 8, default: 4 },
  },
});

/** The state of the one round this gate has. */
const ROUND = new TextEncoder().encode('phone-digits/1');
/** The field's name in the prompt and the answers. */
const FIELD = 'digits';

function config(ctx) {
  const c = JSON.parse(ctx.config);
  return {
    label: c.label,
    attribute: c.attribute ?? 'mobile',
    digits: c.digits ?? 4,
  };
}

function onlyDigits(text) {
  return text.replace(/[^0-9]/g, '');
}

/** Whether `a` and `b` are equal, looking at every character of both. */
function constantTimeEqual(a, b) {
  const n = Math.max(a.length, b.length);
  let diff = a.length === b.length ? 0 : 1;
  for (let i = 0; i < n; i++) {
    diff |= (a.charCodeAt(i) || 0) ^ (b.charCodeAt(i) || 0);
  }
  return diff === 0;
}

function sameBytes(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export const gateApi = {
  describe() {
    return {
      name: 'phone-digits',
      version: '0.1.0',
      kind: 'gate',
      configSchema: SCHEMA,
      summary: 'the person types the last digits of their phone number (JavaScript)',
    };
  },

  // Nothing to register: the refusal the Rust SDK's default gives too.
  // A thrown object is the `err` of a `result`: `{ tag, val }` of plugin-error.
  enrollPrompt(_ctx, _user) {
    throw { tag: 'refused', val: 'this gate needs no enrollment' };
  },

  enroll(_ctx, _user, _state, _input) {
    throw { tag: 'refused', val: 'this gate needs no enrollment' };
  },

  begin(ctx, _user, _enrollment) {
    const c = config(ctx);
    // The same prompt for every user, known or not, with or without a phone.
    return {
      prompt: {
        title: c.label,
        help: `The last ${c.digits} digits of your phone number`,
        display: [],
        fields: [{ name: FIELD, label: `Last ${c.digits} digits`, kind: { tag: 'code' }, maxLength: 32 }],
      },
      state: ROUND,
    };
  },

  answer(ctx, user, _enrollment, state, answers) {
    const c = config(ctx);
    if (!sameBytes(state, ROUND)) {
      throw { tag: 'internal', val: 'unknown round state' };
    }
    const given = onlyDigits(answers.find((a) => a.name === FIELD)?.value ?? '');
    const phone = user.attributes.find(([k]) => k.toLowerCase() === c.attribute.toLowerCase());
    const digits = onlyDigits(phone ? phone[1] : '');
    const known = digits.length >= c.digits;
    // Compare even without a phone number, so both paths cost the same.
    const expected = known ? digits.slice(-c.digits) : '\u0000'.repeat(c.digits);
    if (constantTimeEqual(given, expected) && known) {
      return { tag: 'passed' };
    }
    const reason = known ? 'wrong digits' : `the user has no \`${c.attribute}\` attribute with ${c.digits} digits`;
    write('info', `phone-digits: ${reason}`);
    return { tag: 'failed', val: reason };
  },
};
