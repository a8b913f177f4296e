/** What the command line asks for; the server is the default command. */
export type CliCommand = { readonly command: 'serve' | 'help' | 'version' | 'check-config' } | { readonly error: string };

/** Exit codes: 2 = the configuration or the command line is wrong (nothing was started). */
export const EXIT_USAGE = 2;

export function parseArgs(argv: readonly string[]): CliCommand {
  const args = argv.filter((a) => a !== '');
  if (args.length === 0) return { command: 'serve' };
  const [first, ...rest] = args;
  const command =
    first === '--help' || first === '-h' || first === 'help'
      ? 'help'
      : first === '--version' || first === '-v' || first === 'version'
        ? 'version'
        : first === 'check-config'
          ? 'check-config'
          : first === 'serve'
            ? 'serve'
            : undefined;
  if (command === undefined) return { error: `unknown command or option "${first ?? ''}"` };
  if (rest.includes('--help') || rest.includes('-h')) return { command: 'help' };
  if (rest.length > 0) return { error: `"${command}" takes no arguments, got "${rest.join(' ')}"` };
  return { command };
}
