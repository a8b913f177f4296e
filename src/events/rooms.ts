/** Frappe's room names (docs/protocol.md section 3), in one place. */
export const WEBSITE_ROOM = 'website';
export const SYSTEM_USERS_ROOM = 'all';
export const userRoom = (user: string): string => `user:${user}`;
export const doctypeRoom = (doctype: string): string => `doctype:${doctype}`;
export const docRoom = (doctype: string, name: string): string => `doc:${doctype}/${name}`;
export const openDocRoom = (doctype: string, name: string): string => `open_doc:${doctype}/${name}`;
export const taskRoom = (taskId: string): string => `task_progress:${taskId}`;
