import ArgumentParser

/// The `adapterhost` command: the composition root. It registers the built-in adapter
/// methods with the host and dispatches to subcommands.
struct AdapterHostCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "adapterhost",
        abstract: "Hosts Stable Diffusion adapter methods (LoRA, LyCORIS, TI, hypernetworks, DreamBooth, plugins).",
        subcommands: [Inspect.self, Tokenize.self, Encode.self, Merge.self, Combine.self, Extract.self, Resize.self, Convert.self, Diff.self, PluginsCommand.self, Generate.self, Montage.self]
    )
}

AdapterHostCommand.main()
