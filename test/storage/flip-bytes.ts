/**
 * Test helper for corruption (S13): flips bytes in a file on disk, as a bad disk would.
 */
import { readFileSync, writeFileSync } from 'node:fs';

/**
 * Flips one bit in the middle of every occurrence of `needle` in the file (a stopped node's
 * data.mdb); returns how many it changed. Every copy, so the live page is among them (LMDB
 * keeps copies in pages it has freed).
 */
export function flipInFile(path: string, needle: Buffer): number {
  const data = readFileSync(path);
  let count = 0;
  for (let at = data.indexOf(needle); at !== -1; at = data.indexOf(needle, at + needle.length)) {
    const i = at + Math.floor(needle.length / 2);
    data[i] = data[i]! ^ 0x01;
    count += 1;
  }
  if (count > 0) writeFileSync(path, data);
  return count;
}
