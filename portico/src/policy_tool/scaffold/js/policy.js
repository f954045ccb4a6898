// `{{name}}`: a Portico policy in JavaScript. It refuses requests that lack a header
// (`x-tenant` unless configured) with a 400 problem, and passes the header's value on to
// the policies after it.
//
// The module exports the `policy` interface of the WIT world as an object. An error from
// `init` is a thrown string. Build with `portico policy build`, test with
// `portico policy test` (the cases are in fixtures.yaml).

// An HTTP header name (an RFC 9110 token).
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

// This instance's configuration, set once by `init`.
let header = 'x-tenant';

/** An RFC 9457 problem response. */
function problem(status, title, detail) {
  const body = JSON.stringify({ type: 'about:blank', title, status, detail });
  return {
    tag: 'respond',
    val: { status, headers: [['content-type', 'application/problem+json']], body: new TextEncoder().encode(body) },
  };
}

export const policy = {
  init(config) {
    const settings = JSON.parse(config);
    for (const field of Object.keys(settings)) {
      if (field !== 'header') throw `config field \`${field}\` is unknown`;
    }
    const wanted = settings.header ?? 'x-tenant';
    if (typeof wanted !== 'string' || !TOKEN.test(wanted)) {
      throw `config field \`header\`: ${JSON.stringify(wanted)} is not a header name`;
    }
    header = wanted.toLowerCase();
    // No body, and nothing to do in the response phase.
    return { requestBody: false, responseBody: false, responsePhase: false };
  },

  onRequest(request, context) {
    const value = request.header(header);
    if (value === undefined) {
      return problem(400, 'Bad Request', `The request has no \`${header}\` header.`);
    }
    context.set(header, value);
    return { tag: 'continue' };
  },

  onResponse(request, response, context) {},
};
