/**
 * The shared driver of the registers benches (pair-registers, domain-registers): CPU per write
 * with `registers` declared against one register, from the command line
 * `[registers=1000] [writes=20000]`, printed as one JSON line.
 */
export function printRegistersRatio(cpuPerWrite: (registers: number, writes: number) => number): void {
  const registers = Number(process.argv[2] ?? 1000);
  const writes = Number(process.argv[3] ?? 20000);
  cpuPerWrite(1, 2000); // warm-up (JIT)
  // Each twice, alternated, the lower kept: the first rounds of a process still run code V8 is optimising.
  let one = Infinity;
  let many = Infinity;
  for (let round = 0; round < 2; round++) {
    one = Math.min(one, cpuPerWrite(1, writes));
    many = Math.min(many, cpuPerWrite(registers, writes));
  }
  console.log(
    JSON.stringify({
      writes,
      registers,
      cpuUsPerWriteOneRegister: +one.toFixed(1),
      cpuUsPerWrite: +many.toFixed(1),
      ratio: +(many / one).toFixed(2),
    }),
  );
}
