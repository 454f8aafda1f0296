import CUnderstudyWatchdog
import Foundation
import UnderstudySupervisor

// `understudy run` starts its child through a copy of this executable acting as the watchdog. It must take over
// before anything else runs, while the process still has a single thread.
if CommandLine.arguments.count > 1, CommandLine.arguments[1] == WatchedProcess.watchdogArgument {
    exit(understudy_watchdog_main(CommandLine.argc - 1, CommandLine.unsafeArgv + 1))
}
// The watchdog's one-shot release of a slot once it has proven the command's tree dead.
if CommandLine.arguments.count > 1, CommandLine.arguments[1] == ReleaseSlot.argument {
    exit(await ReleaseSlot.main())
}

await UnderstudyCommand.entry()
