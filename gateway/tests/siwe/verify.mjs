// Verifies a sign-in message as a dapp using the npm `siwe` library would: parse the EIP-4361
// text, check its domain and nonce, recover the signer (ethers). Reads one JSON object on stdin
// ({message, signature, domain, nonce}); prints {"ok": true, "address": …} or
// {"ok": false, "error": …} and exits 0 or 1.
import { SiweMessage } from "siwe";

const input = JSON.parse(await new Promise((resolve) => {
  let text = "";
  process.stdin.on("data", (chunk) => (text += chunk));
  process.stdin.on("end", () => resolve(text));
}));

try {
  const message = new SiweMessage(input.message);
  const result = await message.verify({
    signature: input.signature,
    domain: input.domain,
    nonce: input.nonce,
  });
  console.log(JSON.stringify({ ok: result.success, address: result.data.address }));
  process.exit(result.success ? 0 : 1);
} catch (failure) {
  const error = failure?.error?.type ?? failure?.message ?? String(failure);
  console.log(JSON.stringify({ ok: false, error }));
  process.exit(1);
}
