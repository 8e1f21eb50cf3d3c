/** RFC 6298 §2: the smoothed round trip and its variation, updated by one sample. */
export interface RttState {
  srtt: number | undefined;
  rttvar: number;
}

/** Fold `sample` (ms) into `s`: the first sample sets srtt and rttvar = sample/2, later ones weigh 1/8 and 1/4. */
export function addRttSample(s: RttState, sample: number): void {
  if (s.srtt === undefined) {
    s.srtt = sample;
    s.rttvar = sample / 2;
  } else {
    s.rttvar = 0.75 * s.rttvar + 0.25 * Math.abs(s.srtt - sample);
    s.srtt = 0.875 * s.srtt + 0.125 * sample;
  }
}
