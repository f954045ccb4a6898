"""Signing keys, their JWKS, and the access tokens of scenario S3: one token per algorithm
for cache hits, and for all misses more distinct tokens than any cache holds (cycled in
order, each comes back only after it has been evicted): Portico's keeps 32 MiB of tokens
and claims at ~1 KiB each (~32,000-42,000 of these), Envoy's 10,000 tokens."""
import base64, json, multiprocessing, os, time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ISSUER, AUDIENCE, APPLICATION = "https://bench.invalid", "portico", "bench-app"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(n, size):
    return b64url(n.to_bytes(size, "big"))


class Signer:
    def __init__(self):
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self):
        e, r = self.ec.public_key().public_numbers(), self.rsa.public_key().public_numbers()
        return {"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "es", "alg": "ES256", "use": "sig", "x": _uint(e.x, 32), "y": _uint(e.y, 32)},
            {"kty": "RSA", "kid": "rs", "alg": "RS256", "use": "sig", "n": _uint(r.n, 256), "e": _uint(r.e, 3)},
        ]}

    def token(self, alg, serial):
        now = int(time.time())
        header = b64url(json.dumps({"alg": alg, "typ": "JWT", "kid": alg[:2].lower()}).encode())
        claims = b64url(json.dumps({"iss": ISSUER, "aud": AUDIENCE, "sub": f"user-{serial}", "azp": APPLICATION,
                                    "jti": f"{alg}-{serial}", "iat": now, "nbf": now - 60, "exp": now + 86400}).encode())
        signing_input = f"{header}.{claims}".encode()
        if alg == "ES256":
            r, s = decode_dss_signature(self.ec.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            signature = self.rsa.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{header}.{claims}.{b64url(signature)}"

    def token_file(self, alg, count, workdir):
        """`count` distinct tokens, one per line, signed on every core (RSA signing takes
        ~1 ms a token)."""
        path = os.path.join(workdir, f"tokens-{alg}.txt")
        cores = os.cpu_count() or 1
        chunks = [(alg, range(start, min(count, start + 1000))) for start in range(0, count, 1000)]
        with multiprocessing.get_context("fork").Pool(cores, initializer=_adopt, initargs=(self,)) as pool, open(path, "w") as f:
            for tokens in pool.imap(_sign_chunk, chunks):
                f.writelines(token + "\n" for token in tokens)
        return path


_signer = None


def _adopt(signer):
    global _signer
    _signer = signer


def _sign_chunk(chunk):
    alg, serials = chunk
    return [_signer.token(alg, i) for i in serials]


def cycling_lua(workdir, name, token_file):
    """A wrk script sending each request with the next token of the file, round and round."""
    path = os.path.join(workdir, f"{name}.lua")
    with open(path, "w") as f:
        f.write(f"""local tokens, i = {{}}, 0
for line in io.lines("{token_file}") do tokens[#tokens + 1] = "Bearer " .. line end
request = function()
  i = i % #tokens + 1
  return wrk.format(nil, nil, {{["authorization"] = tokens[i]}})
end
""")
    return path
