// What the server accepts (GET /api/limits, public), so that the page offers only that and
// can say the limits in its messages. Until the answer arrives, or if it never does, the
// server's documented defaults stand in.

export const DEFAULT_LIMITS = Object.freeze({
  max_upload_bytes: 25 * 1024 * 1024,
  max_pixels: 50_000_000,
  max_dimension: 20_000,
  max_frames: 100,
  max_steps: 10,
  max_sigma: 100,
});

const limits = { ...DEFAULT_LIMITS };

/** The limits as last learnt from the server (or the defaults). */
export const currentLimits = () => limits;

/** Ask the server once; resolves to the limits, whatever the answer. */
export async function loadLimits() {
  try {
    const response = await fetch("/api/limits", { headers: { Accept: "application/json" }, cache: "no-store", signal: AbortSignal.timeout(5000) });
    if (response.ok) {
      const body = await response.json();
      for (const name of Object.keys(DEFAULT_LIMITS)) {
        if (Number.isFinite(body?.[name]) && body[name] > 0) limits[name] = body[name];
      }
      document.documentElement.dataset.limits = "server";
    }
  } catch {
    // offline or an old server: the defaults will do, and the server still has the last word
  }
  return limits;
}
