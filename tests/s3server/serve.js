#!/usr/bin/env node
// The S3-compatible server of the vault's S3 tests: s3rver (S3 REST API, objects as files under
// --directory) with one bucket, and with SigV4 checked for real. s3rver itself parses SigV4
// headers but only looks the access key id up, so the signature check is done here, in front of
// it, the way S3 does it: a request not signed with the configured secret key is refused with
// 403 SignatureDoesNotMatch. The key pair comes from the environment (S3_ACCESS_KEY_ID,
// S3_SECRET_ACCESS_KEY), never from argv. Prints "ready <port>" once listening.
//
//   node serve.js --directory DIR --bucket NAME [--address 127.0.0.1] [--port 0]
'use strict';

const crypto = require('crypto');
const S3rver = require('s3rver');
const AWSAccount = require('s3rver/lib/models/account');

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  if (at === -1) {
    if (fallback === undefined) throw new Error(`--${name} is required`);
    return fallback;
  }
  return process.argv[at + 1];
}

const accessKeyId = process.env.S3_ACCESS_KEY_ID;
const secretKey = process.env.S3_SECRET_ACCESS_KEY;
if (!accessKeyId || !secretKey) throw new Error('S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY needed');

const sha256 = data => crypto.createHash('sha256').update(data).digest('hex');
const hmac = (key, data) => crypto.createHmac('sha256', key).update(data).digest();
const rfc3986 = text =>
  encodeURIComponent(text).replace(/[!'()*]/g, c => '%' + c.charCodeAt(0).toString(16).toUpperCase());

function canonicalQuery(raw) {
  if (!raw) return '';
  return raw
    .split('&')
    .filter(Boolean)
    .map(pair => {
      const [k, v = ''] = pair.split('=');
      const decode = s => decodeURIComponent(s.replace(/\+/g, ' '));
      return [rfc3986(decode(k)), rfc3986(decode(v))];
    })
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
}

function refuse(ctx, status, code, message) {
  ctx.status = status;
  ctx.type = 'application/xml';
  ctx.body =
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
    `<Error><Code>${code}</Code><Message>${message}</Message></Error>`;
}

// AWS Signature Version 4 (header form), as S3 checks it.
async function verifySigV4(ctx, next) {
  const auth = ctx.get('authorization');
  const match = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/s3\/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$/.exec(
    auth,
  );
  if (!match) return refuse(ctx, 403, 'AccessDenied', 'SigV4 header authentication required');
  const [, keyId, day, region, signedHeaders, signature] = match;
  if (keyId !== accessKeyId) {
    return refuse(ctx, 403, 'InvalidAccessKeyId', 'The access key id does not exist');
  }
  const amzDate = ctx.get('x-amz-date');
  const payloadHash = ctx.get('x-amz-content-sha256');
  if (!amzDate.startsWith(day) || !payloadHash) {
    return refuse(ctx, 403, 'AccessDenied', 'x-amz-date and x-amz-content-sha256 required');
  }
  const [rawPath, rawQuery = ''] = ctx.originalUrl.split(/\?(.*)/s);
  const headers = signedHeaders
    .split(';')
    .map(h => `${h}:${String(ctx.req.headers[h] ?? '').trim().replace(/\s+/g, ' ')}\n`)
    .join('');
  const canonical = [ctx.method, rawPath, canonicalQuery(rawQuery), headers, signedHeaders, payloadHash].join('\n');
  const scope = `${day}/${region}/s3/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256(canonical)].join('\n');
  const key = hmac(hmac(hmac(hmac(`AWS4${secretKey}`, day), region), 's3'), 'aws4_request');
  const expected = Buffer.from(hmac(key, toSign).toString('hex'));
  if (!crypto.timingSafeEqual(expected, Buffer.from(signature))) {
    return refuse(ctx, 403, 'SignatureDoesNotMatch', 'The request signature does not match');
  }
  return next();
}

async function main() {
  AWSAccount.DUMMY_ACCOUNT.revokeAccessKey('S3RVER');
  AWSAccount.DUMMY_ACCOUNT.createKeyPair(accessKeyId, secretKey);
  const server = new S3rver({
    directory: option('directory'),
    address: option('address', '127.0.0.1'),
    port: Number(option('port', '0')),
    silent: true,
    vhostBuckets: false,
    configureBuckets: [{ name: option('bucket'), configs: [] }],
  });
  // Koa composes its middleware when it starts listening: this check runs before s3rver's own.
  server.middleware.unshift(verifySigV4);
  const { port } = await server.run();
  process.stdout.write(`ready ${port}\n`);
  const stop = () => server.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch(err => {
  process.stderr.write(`s3 test server: ${err.stack || err}\n`);
  process.exit(1);
});
