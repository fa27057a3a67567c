/** Aligned text tables for the command line. */

/** Writes `rows` under `header`, columns padded to their widest cell. */
export function printTable(
  out: { write(text: string): unknown },
  header: readonly string[],
  rows: readonly (readonly string[])[],
): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  out.write(`${line(header)}\n`);
  for (const row of rows) out.write(`${line(row)}\n`);
}
