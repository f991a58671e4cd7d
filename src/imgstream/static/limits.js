// What the server accepts (GET /api/limits, public), so that the page offers only that and
// can say the limits in its messages. The server is the one place that defines them: until
// its answer arrives, or if it never does, the page bounds nothing itself (a limit is
// `undefined`) and the server still has the last word.

const limits = {};

/** The limits as last learnt from the server; a limit not learnt is `undefined`. */
export const currentLimits = () => limits;

/** Ask the server once; resolves to the limits, whatever the answer. */
export async function loadLimits() {
  try {
    const response = await fetch("/api/limits", { headers: { Accept: "application/json" }, cache: "no-store", signal: AbortSignal.timeout(5000) });
    if (response.ok) {
      const body = await response.json();
      for (const [name, value] of Object.entries(body ?? {})) {
        if (Number.isFinite(value) && value > 0) limits[name] = value;
      }
      document.documentElement.dataset.limits = "server";
    }
  } catch {
    // offline or an old server: the page bounds nothing, and the server still refuses
  }
  return limits;
}

/**
 * The files split into consecutive groups that each fit one batch: at most
 * `batch_max_files` images and `batch_max_bytes` together (a file larger than that on its
 * own still gets a group, for the server to refuse by name). Limits not learnt bound nothing.
 */
export function batchesOf(files, { batch_max_files: maxFiles = Infinity, batch_max_bytes: maxBytes = Infinity } = limits) {
  const groups = [];
  let group = [];
  let bytes = 0;
  for (const file of files) {
    if (group.length && (group.length >= maxFiles || bytes + file.size > maxBytes)) {
      groups.push(group);
      group = [];
      bytes = 0;
    }
    group.push(file);
    bytes += file.size;
  }
  if (group.length) groups.push(group);
  return groups;
}
