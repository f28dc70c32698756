/**
 * The shell's tokenizer: whitespace splits, double and single quotes group (and join with
 * unquoted neighbours), backslash escapes work as documented (\n, \xHH raw bytes, \u{…}),
 * any UTF-8 passes through unchanged, and an unbalanced quote, an unknown escape (`"a\q"`,
 * not the key `aq`) or a trailing backslash is an error naming it instead of a guess. quoteArg's output tokenizes back
 * to its input.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { quoteArg, tokenize, type Token } from '../../src/cli/tokenize.js';

function texts(line: string): string[] {
  const r = tokenize(line);
  assert.ok(r.ok, `expected ${JSON.stringify(line)} to tokenize`);
  return r.tokens.map((t: Token) => t.text);
}

function bytes(line: string): number[][] {
  const r = tokenize(line);
  assert.ok(r.ok);
  return r.tokens.map((t) => [...t.bytes]);
}

function error(line: string): string {
  const r = tokenize(line);
  assert.ok(!r.ok, `expected ${JSON.stringify(line)} to fail`);
  return r.error;
}

describe('tokenize', () => {
  test('splits on any whitespace and ignores leading, trailing and repeated blanks', () => {
    assert.deepEqual(texts('  insert   k \t v  '), ['insert', 'k', 'v']);
    assert.deepEqual(texts(''), []);
    assert.deepEqual(texts('   '), []);
  });

  test('double quotes keep spaces: insert greeting "hello world"', () => {
    assert.deepEqual(texts('insert greeting "hello world"'), ['insert', 'greeting', 'hello world']);
  });

  test("single quotes keep spaces and are literal except \\' and \\\\", () => {
    assert.deepEqual(texts(`insert k 'a "b" \\n c'`), ['insert', 'k', 'a "b" \\n c']);
    assert.deepEqual(texts(`put k 'it\\'s'`), ['put', 'k', "it's"]);
    assert.deepEqual(texts(`put k 'a\\\\b'`), ['put', 'k', 'a\\b']);
  });

  test('empty quotes are an empty argument', () => {
    assert.deepEqual(texts('insert k ""'), ['insert', 'k', '']);
    assert.deepEqual(texts("insert k ''"), ['insert', 'k', '']);
  });

  test('quoted and unquoted parts next to each other join', () => {
    assert.deepEqual(texts(`a"b c"d 'e f'g`), ['ab cd', 'e fg']);
  });

  test('escapes inside double quotes', () => {
    assert.deepEqual(texts(String.raw`"a\"b" "c\\d" "1\n2\t3\r" "\0"`), ['a"b', 'c\\d', '1\n2\t3\r', '\0']);
    assert.deepEqual(texts(String.raw`"\u00e9\u{1F600}\uD83D\uDE00"`), ['é😀😀']);
    assert.deepEqual(texts(String.raw`"it\'s"`), ["it's"]);
  });

  test('\\xHH is one raw byte, so values that are not UTF-8 can be typed', () => {
    assert.deepEqual(bytes(String.raw`"\xff\x00A"`), [[0xff, 0x00, 0x41]]);
    assert.deepEqual(bytes(String.raw`"é\xc3\xa9"`), [[0xc3, 0xa9, 0xc3, 0xa9]]);
    assert.match(error(String.raw`"\xZZ"`), /\\x takes two hex digits/);
  });

  test('outside quotes a backslash makes a blank or a quote literal', () => {
    assert.deepEqual(texts(String.raw`insert hello\ world a\"b c\'d e\\f`), [
      'insert',
      'hello world',
      'a"b',
      "c'd",
      'e\\f',
    ]);
  });

  test('outside quotes the escapes of double quotes work too: bin\\x00 is 62 69 6e 00, not binx00', () => {
    assert.deepEqual(bytes(String.raw`bin\x00 a\nb \u00e9`), [
      [0x62, 0x69, 0x6e, 0x00],
      [0x61, 0x0a, 0x62],
      [0xc3, 0xa9],
    ]);
  });

  test('an unknown escape is an error naming it, inside double quotes and outside quotes', () => {
    // Before: "a\q" was the key aq, silently.
    assert.match(error(String.raw`get "a\q"`), /^unknown escape \\q at column 7: write \\\\ for a backslash/);
    assert.match(error(String.raw`get a\q`), /^unknown escape \\q at column 6/);
    assert.match(error(String.raw`get "\é"`), /^unknown escape \\é/);
    assert.doesNotMatch(error(String.raw`get "a\q"`), /quote arguments with spaces/);
  });

  test('any UTF-8 passes through, bytes equal to the UTF-8 encoding', () => {
    const line = 'insert ключ "値 🎉 ü"';
    assert.deepEqual(texts(line), ['insert', 'ключ', '値 🎉 ü']);
    const r = tokenize(line);
    assert.ok(r.ok);
    assert.deepEqual(Buffer.from(r.tokens[2]?.bytes ?? []), Buffer.from('値 🎉 ü', 'utf8'));
  });

  test('an unbalanced quote is an error with a hint', () => {
    assert.match(error('insert k "hello'), /unbalanced quote.*double quote/);
    assert.match(error("insert k 'hello"), /unbalanced quote.*single quote/);
    assert.match(error('insert k "a\\"'), /unbalanced quote/);
  });

  test('a trailing backslash is an error', () => {
    assert.match(error('insert k v\\'), /ends with a backslash/);
  });

  test('quoteArg round-trips through tokenize', () => {
    for (const s of [
      'plain',
      'hello world',
      '',
      'a"b',
      "it's",
      'tab\there',
      'new\nline',
      'back\\slash',
      '値 🎉',
      '\x1b[31m',
    ]) {
      const r = tokenize(`get ${quoteArg(s)}`);
      assert.ok(r.ok, s);
      assert.equal(r.tokens.length, 2, s);
      assert.equal(r.tokens[1]?.text, s);
    }
    assert.equal(quoteArg('plain'), 'plain');
    assert.equal(quoteArg('hello world'), '"hello world"');
  });
});
