// `mask-fields`: a Portico policy in JavaScript that masks fields of JSON responses for
// callers without a given scope, and tells the upstream who the caller is.
//
// Request phase: when an earlier policy (key-auth) has authenticated the caller, the
// request gets a header (`x-consumer` unless configured) computed from its identity:
// `shop; tier=Gold; user=alice`.
// Response phase: for a JSON response, every configured field is masked unless the caller
// has the `unless_scope` scope. Fields are dotted paths; `[]` walks every item of an array
// (`orders[].card.number`). A string keeps its last `keep_last` characters.

const CONFIG_FIELDS = new Set(['fields', 'unless_scope', 'keep_last', 'mask', 'consumer_header']);
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

// This instance's configuration, set once by `init`.
let settings = null;

/** Parse `a.b[].c` into steps: a key, or `[]` for every item. */
function parsePath(text, at) {
  const steps = [];
  for (const part of text.split('.')) {
    const match = /^([^\[\]]+)((?:\[\])*)$/.exec(part);
    if (!match) throw `config field ${at}: ${JSON.stringify(text)} is not a field path`;
    steps.push(match[1]);
    for (let i = 0; i < match[2].length / 2; i++) steps.push('[]');
  }
  return steps;
}

function maskValue(value) {
  if (typeof value !== 'string') return settings.mask;
  const kept = value.length > settings.keepLast ? value.slice(value.length - settings.keepLast) : '';
  return '*'.repeat(value.length - kept.length) + kept;
}

/** Mask the field at `steps` under `node`; returns how many values were masked. */
function maskAt(node, steps) {
  if (node === null || typeof node !== 'object' || steps.length === 0) return 0;
  const [step, ...rest] = steps;
  if (step === '[]') {
    if (!Array.isArray(node)) return 0;
    if (rest.length === 0) {
      node.forEach((item, i) => { node[i] = maskValue(item); });
      return node.length;
    }
    return node.reduce((count, item) => count + maskAt(item, rest), 0);
  }
  if (Array.isArray(node) || !Object.hasOwn(node, step)) return 0;
  if (rest.length === 0) {
    node[step] = maskValue(node[step]);
    return 1;
  }
  return maskAt(node[step], rest);
}

function consumerOf(identity) {
  const parts = [identity.application ?? 'anonymous'];
  if (identity.tier !== undefined) parts.push(`tier=${identity.tier}`);
  if (identity.user !== undefined) parts.push(`user=${identity.user}`);
  return parts.join('; ');
}

export const policy = {
  init(config) {
    const given = JSON.parse(config);
    for (const field of Object.keys(given)) {
      if (!CONFIG_FIELDS.has(field)) throw `config field \`${field}\` is unknown`;
    }
    if (!Array.isArray(given.fields) || given.fields.length === 0) {
      throw 'config field `fields`: a non-empty list of field paths';
    }
    const keepLast = given.keep_last ?? 0;
    if (!Number.isInteger(keepLast) || keepLast < 0) throw 'config field `keep_last`: a count';
    const header = given.consumer_header ?? 'x-consumer';
    if (typeof header !== 'string' || !TOKEN.test(header)) {
      throw `config field \`consumer_header\`: ${JSON.stringify(header)} is not a header name`;
    }
    settings = {
      paths: given.fields.map((field, i) => parsePath(String(field), `fields[${i}]`)),
      unlessScope: given.unless_scope ?? null,
      keepLast,
      mask: given.mask ?? '***',
      header: header.toLowerCase(),
    };
    return { requestBody: false, responseBody: true, responsePhase: true };
  },

  onRequest(request, context) {
    const identity = context.identity();
    if (identity !== undefined) {
      request.setHeader(settings.header, consumerOf(identity));
    } else {
      // Whatever the client claims, only the gateway says who the consumer is.
      request.removeHeader(settings.header);
    }
    return { tag: 'continue' };
  },

  onResponse(request, response, context) {
    const identity = context.identity();
    if (settings.unlessScope !== null && identity?.scopes.includes(settings.unlessScope)) return;
    const mediaType = (response.header('content-type') ?? '').split(';')[0].trim().toLowerCase();
    if (mediaType !== 'application/json' && !mediaType.endsWith('+json')) return;
    let document;
    try {
      document = JSON.parse(new TextDecoder().decode(response.body()));
    } catch {
      // A body too large to buffer, or not JSON after all: leave it as it is.
      return;
    }
    const masked = settings.paths.reduce((count, steps) => count + maskAt(document, steps), 0);
    if (masked > 0) {
      response.setBody(new TextEncoder().encode(JSON.stringify(document)));
      response.setHeader('x-masked-fields', String(masked));
    }
  },
};
