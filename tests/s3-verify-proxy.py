#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""An S3 front for the tests that checks Signature V4, before s3rver.

s3rver 3.7.1 checks that a signed request names a known access key but
never computes a V4 signature.  This front recomputes each request's
signature with botocore (the AWS SDK's own signer, python3-botocore)
from the secret of the access key it names, answers S3's 403
InvalidAccessKeyId or SignatureDoesNotMatch (or 400
XAmzContentSHA256Mismatch) when it does not match, and passes good
requests on to s3rver.

It also keeps the multipart upload bookkeeping s3rver lacks: it answers
AbortMultipartUpload (DELETE ?uploadId=) and ListMultipartUploads (GET
/BUCKET?uploads) itself, from the uploads it saw started and not yet
completed or aborted.

  s3-verify-proxy.py PORTFILE UPSTREAM KEYFILE [CONTROL]

KEYFILE has "ACCESS_KEY SECRET" lines (keys stay out of the process
list).  The port listened on (127.0.0.1) is written to PORTFILE.  While
CONTROL-hold exists, part uploads wait before their body is read, and
CONTROL-hold.held says one does; if CONTROL-fail exists, the next
upload of part 2 is answered 503 SlowDown (and the file removed).  One
line per request on stderr.
"""

import hashlib
import hmac
import http.client
import http.server
import os
import re
import sys
import threading
import time
import urllib.parse
from xml.sax.saxutils import escape

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

portfile, upstream, keyfile = sys.argv[1:4]
control = sys.argv[4] if len(sys.argv) > 4 else None
holdfile = control and control + '-hold'
failfile = control and control + '-fail'
upstream = urllib.parse.urlsplit(upstream)
with open(keyfile) as f:
    keys = dict(line.split(None, 1) for line in f.read().splitlines()
                if line.strip())
keys = {k: v.strip() for k, v in keys.items()}

pending = {}                    # upload ID: path of the object
lock = threading.Lock()

AUTH = re.compile(r'AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/s3/'
                  r'aws4_request, *SignedHeaders=([a-z0-9;-]+), *'
                  r'Signature=([0-9a-f]{64})$')


def error_xml(code, message):
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code>'
            '<Message>%s</Message></Error>' % (code, escape(message))).encode()


def check_signature(method, path, headers, body):
    """None if the request is signed right (or not signed), else
    (status, code, message)."""
    auth = headers.get('Authorization')
    if auth is None:
        return None
    m = AUTH.match(auth)
    if m is None:
        return 400, 'AuthorizationHeaderMalformed', 'not a SigV4 header'
    key_id, _, region, signed, signature = m.groups()
    if key_id not in keys:
        return 403, 'InvalidAccessKeyId', 'unknown access key'
    sent_hash = headers.get('x-amz-content-sha256')
    if sent_hash not in (None, 'UNSIGNED-PAYLOAD') and \
       sent_hash != hashlib.sha256(body).hexdigest():
        return 400, 'XAmzContentSHA256Mismatch', 'payload hash differs'
    names = signed.split(';')
    if 'host' not in names or any(headers.get(n) is None for n in names):
        sys.stderr.write('signed headers: %s; sent: %s\n'
                         % (signed, ' '.join(headers.keys())))
        return 403, 'SignatureDoesNotMatch', 'a signed header is missing'
    request = AWSRequest(method=method,
                         url='http://%s%s' % (headers['Host'], path),
                         headers={n: headers[n] for n in names}, data=body)
    request.context['timestamp'] = headers.get('x-amz-date', '')
    signer = S3SigV4Auth(Credentials(key_id, keys[key_id]), 's3', region)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical),
                                request)
    if not hmac.compare_digest(expected, signature):
        # What the client should have signed, to see why in the log.
        sys.stderr.write('canonical request:\n%s\n' % canonical)
        return 403, 'SignatureDoesNotMatch', 'signature differs'
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body, headers=()):
        sys.stderr.write('%s %s %d\n' % (self.command, self.path, status))
        sys.stderr.flush()
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        # A HEAD's Content-Length is the object's, passed on.
        if self.command != 'HEAD' or \
           not any(n.lower() == 'content-length' for n, _ in headers):
            self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)

    def handle_one(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        if holdfile and self.command == 'PUT' and 'partNumber' in query:
            if os.path.exists(holdfile):
                open(holdfile + '.held', 'w').close()
            deadline = time.monotonic() + 60
            while os.path.exists(holdfile) and time.monotonic() < deadline:
                time.sleep(0.05)
        length = int(self.headers.get('Content-Length', '0'))
        body = self.rfile.read(length) if length else b''
        bad = check_signature(self.command, self.path, self.headers, body)
        if not bad and failfile and query.get('partNumber') == ['2']:
            try:
                os.unlink(failfile)
                bad = 503, 'SlowDown', 'Please reduce your request rate.'
            except FileNotFoundError:
                pass
        if bad:
            return self.reply(bad[0], error_xml(bad[1], bad[2]),
                              [('Content-Type', 'application/xml')])
        upload_id = query.get('uploadId', [None])[0]
        if self.command == 'DELETE' and upload_id is not None:
            with lock:
                found = pending.pop(upload_id, None)
            if found is None:
                return self.reply(404, error_xml('NoSuchUpload', upload_id))
            return self.reply(204, b'')
        if self.command == 'GET' and 'uploads' in query:
            bucket = url.path.rstrip('/') + '/'
            with lock:
                uploads = [(k, p[len(bucket):]) for k, p in pending.items()
                           if p.startswith(bucket)]
            xml = '<ListMultipartUploadsResult>%s</ListMultipartUploadsResult>' \
                % ''.join('<Upload><Key>%s</Key><UploadId>%s</UploadId></Upload>'
                          % (escape(p), escape(k)) for k, p in uploads)
            return self.reply(200, xml.encode(),
                              [('Content-Type', 'application/xml')])
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port)
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ('connection', 'expect')}
        conn.request(self.command, self.path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        if self.command == 'POST' and response.status == 200:
            with lock:
                if 'uploads' in query:
                    m = re.search(rb'<UploadId>([^<]+)</UploadId>', data)
                    if m:
                        pending[m.group(1).decode()] = url.path
                elif upload_id is not None and b'<Error>' not in data:
                    pending.pop(upload_id, None)
        self.reply(response.status, data,
                   [(k, v) for k, v in response.getheaders()
                    if k.lower() not in ('connection', 'transfer-encoding')
                    and (self.command == 'HEAD'
                         or k.lower() != 'content-length')])

    def do_GET(self):
        self.handle_one()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET


server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
server.daemon_threads = True
with open(portfile + '.tmp', 'w') as f:
    f.write('%d\n' % server.server_address[1])
os.rename(portfile + '.tmp', portfile)
server.serve_forever()
