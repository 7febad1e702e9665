'use strict';
// The read-only dataset behind `GET /data`: the very bytes and checksums of
// crates/service/src/dataset.rs, so a Node server and a Rust server answer
// `/data?key=K` byte for byte alike.
//
// The content is SplitMix64 output, little-endian, 8 bytes at a time; a
// request checksums the 64 KiB window `key % windows` with 64-bit FNV-1a.
// JavaScript numbers hold 53 bits, so the 64-bit arithmetic is done on
// 32-bit halves (BigInt would be exact too, and about a hundred times
// slower).

const WINDOW = 64 * 1024;
const TWO_32 = 4294967296;

// The high half of the last mul64 (a second return value without an
// allocation in the hot loop).
let mulHi = 0;

// (ah:al) * (bh:bl) mod 2^64: returns the low half, leaves the high half in
// `mulHi`.
function mul64(ah, al, bh, bl) {
  // al * bl exactly, in 16-bit pieces: every partial product fits a double.
  const a0 = al & 0xffff;
  const a1 = al >>> 16;
  const b0 = bl & 0xffff;
  const b1 = bl >>> 16;
  const mid = a0 * b1 + a1 * b0;
  const low = a0 * b0 + (mid % 65536) * 65536;
  const lo = low >>> 0;
  const carry = Math.floor(low / TWO_32);
  const hi = a1 * b1 + Math.floor(mid / 65536) + carry;
  // The cross terms only reach the high half; Math.imul keeps their low 32
  // bits, which is all that survives mod 2^64.
  mulHi = (hi + Math.imul(ah, bl) + Math.imul(al, bh)) >>> 0;
  return lo;
}

// `mb` MiB of the dataset, in a SharedArrayBuffer when `shared` (one copy
// for every thread of the process) or a plain ArrayBuffer. Every page is
// written, so the memory is really resident.
function generate(mb, shared) {
  const size = mb * 1024 * 1024;
  const buffer = shared ? new SharedArrayBuffer(size) : new ArrayBuffer(size);
  const words = new Uint32Array(buffer);
  // state = 0x9e3779b97f4a7c15, the increment too.
  let sh = 0x9e3779b9;
  let sl = 0x7f4a7c15;
  for (let i = 0; i < words.length; i += 2) {
    const sum = sl + 0x7f4a7c15;
    sl = sum >>> 0;
    sh = (sh + 0x9e3779b9 + (sum >= TWO_32 ? 1 : 0)) >>> 0;
    let zh = sh;
    let zl = sl;
    // z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
    zl = (zl ^ ((zl >>> 30) | (zh << 2))) >>> 0;
    zh = (zh ^ (zh >>> 30)) >>> 0;
    zl = mul64(zh, zl, 0xbf58476d, 0x1ce4e5b9);
    zh = mulHi;
    // z = (z ^ (z >> 27)) * 0x94d049bb133111eb
    zl = (zl ^ ((zl >>> 27) | (zh << 5))) >>> 0;
    zh = (zh ^ (zh >>> 27)) >>> 0;
    zl = mul64(zh, zl, 0x94d049bb, 0x133111eb);
    zh = mulHi;
    // z ^= z >> 31
    zl = (zl ^ ((zl >>> 31) | (zh << 1))) >>> 0;
    zh = (zh ^ (zh >>> 31)) >>> 0;
    // Little-endian, as `z.to_le_bytes()`.
    words[i] = zl;
    words[i + 1] = zh;
  }
  return new Uint8Array(buffer);
}

// How many windows a key chooses among.
function windows(bytes) {
  return bytes ? Math.floor(bytes.length / WINDOW) : 0;
}

// The FNV-1a checksum of window `key % windows` (key a BigInt, any u64) as
// 16 hex digits, or null for an empty dataset.
function checksum(bytes, key) {
  const count = windows(bytes);
  if (count === 0) return null;
  const start = Number(key % BigInt(count)) * WINDOW;
  const end = start + WINDOW;
  let hh = 0xcbf29ce4;
  let hl = 0x84222325;
  for (let i = start; i < end; i++) {
    hl = (hl ^ bytes[i]) >>> 0;
    // h * 0x100000001b3 = h * 0x1b3 + (h << 40)
    const t = hl * 0x1b3;
    hh = (Math.imul(hh, 0x1b3) + (hl << 8) + Math.floor(t / TWO_32)) >>> 0;
    hl = t >>> 0;
  }
  return hh.toString(16).padStart(8, '0') + hl.toString(16).padStart(8, '0');
}

module.exports = { WINDOW, generate, windows, checksum };
