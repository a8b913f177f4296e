// A stand-in for the Frappe web service, for the local compose stack only:
// answers the gateway's auth and permission calls
// (/api/method/frappe.realtime.get_user_info, .has_permission, and the v15
// can_subscribe_doc/can_subscribe_doctype) and lets everyone in as
// "Administrator" unless the request carries the cookie sid=Guest.
// Plain node, no dependencies: `node fake-backend.mjs` (PORT, default 8000).
import { createServer } from 'node:http';

const port = Number(process.env.PORT || 8000);
const PREFIX = '/api/method/frappe.realtime.';

const server = createServer((req, res) => {
  const url = new URL(req.url || '/', 'http://backend');
  const send = (status, body) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  if (url.pathname === '/health') return send(200, { ok: true });
  if (!url.pathname.startsWith(PREFIX)) return send(404, { exc_type: 'DoesNotExistError' });
  const guest = /(?:^|;\s*)sid=Guest(?:;|$)/.test(req.headers.cookie || '');
  const method = url.pathname.slice(PREFIX.length);
  switch (method) {
    case 'get_user_info':
      return send(200, {
        message: guest
          ? { user: 'Guest', user_type: 'Website User', installed_apps: ['frappe'] }
          : { user: 'Administrator', user_type: 'System User', installed_apps: ['frappe'] },
      });
    case 'has_permission':
      return send(200, { message: !guest });
    case 'can_subscribe_doc':
    case 'can_subscribe_doctype':
      return guest ? send(403, { exc_type: 'PermissionError' }) : send(200, { message: true });
    default:
      return send(404, { exc_type: 'DoesNotExistError' });
  }
});
server.listen(port, () => console.log(`fake Frappe backend on :${port}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
