// Allows a request when it has `x-allow: yes` and answers 403 otherwise: the same work as
// the Rust `allow-header`, for comparing languages.

const FORBIDDEN = { tag: 'respond', val: { status: 403, headers: [], body: new Uint8Array() } };

export const policy = {
  init(config) {
    return { requestBody: false, responseBody: false, responsePhase: false };
  },
  onRequest(request, context) {
    return request.header('x-allow') === 'yes' ? { tag: 'continue' } : FORBIDDEN;
  },
  onResponse(request, response, context) {},
};
