// Console tokens as LabOrchestrator mints them: HS256 JWTs with the claims
// {"id", "exp", "lab_instance": {"lab_id", "lab_instance_id", "namespace_name",
// "allowed_vmi_names", "additional_data"}}, signed with node's own HMAC (no JWT package).
import { createHmac, randomBytes } from 'node:crypto';

/** A fresh random secret for one test run's proxy (SECRET_KEY). */
export function randomSecret() {
  return randomBytes(32).toString('base64url');
}

function base64url(value) {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

/** Signs `claims` with HS256 and `secret`. */
export function signHs256(claims, secret) {
  const signingInput = `${base64url({ alg: 'HS256', typ: 'JWT' })}.${base64url(claims)}`;
  const signature = createHmac('sha256', secret).update(signingInput).digest('base64url');
  return `${signingInput}.${signature}`;
}

/**
 * A console token for `vmis` in `namespace`, valid for `lifetimeSeconds` from now (negative:
 * already expired), with the optional `console` claim (`{ role: 'observer', record: true }`).
 */
export function consoleToken(
  secret,
  { namespace = 'default', vmis, lifetimeSeconds = 600, console: consoleClaim },
) {
  const now = Math.floor(Date.now() / 1000);
  return signHs256(
    {
      ...(consoleClaim ? { console: consoleClaim } : {}),
      id: 42,
      exp: now + lifetimeSeconds,
      lab_instance: {
        lab_id: 7,
        lab_instance_id: 1001,
        namespace_name: namespace,
        allowed_vmi_names: vmis,
        additional_data: { course: 'e2e' },
      },
    },
    secret,
  );
}
