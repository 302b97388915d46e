import ArgumentParser
import Foundation
import Host
import LoRA
import Tensor

/// `adapterhost convert L --to kohya|peft [--model BASE] --out L2`
struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rewrite a LoRA in kohya or PEFT (diffusers) naming, losslessly.",
        discussion: """
        Factors are copied bit for bit; only names change (kohya lora_unet_/lora_te_ names — SDXL in \
        kohya's sgm spelling — or PEFT unet./text_encoder. names with lora_A/lora_B). Every module \
        keeps its scale: kohya alpha = scale·rank, PEFT lora_alpha with rank_pattern/alpha_pattern in \
        lora_adapter_metadata (unlike diffusers' kohya export, which sets alpha = rank). Names are \
        translated through the family's standard layout, or --model's layers. LoRA/LoCon modules only.
        """
    )

    @Argument(help: "The LoRA to convert.") var input: String
    @Option(name: .customLong("to"), help: "kohya or peft.") var format: String
    @Option(help: "Base model whose layers name the modules (default: the family's standard layout).") var model: String?
    @Option(help: "sd1, sd2 or sdxl, when the file does not say.") var family: String?
    @Option(help: "Output LoRA file.") var out: String
    @Flag(help: "Print the summary as JSON.") var json = false

    func run() throws {
        try reportingErrors {
            let target = try parseFormat(format)
            let file = try LoRAOperationInput(path: input)
            let names = try LoRANameSpace.resolve(for: [file], model: try model.map { try ModelWeights.load(path: $0) },
                                                  family: try family.map(parseFamily))
            let result = try LoRAConversion.convert(file, to: target, names: names)
            try LoRAFileWriter.write(result.tensors, metadata: result.metadata, to: out, inputPaths: [input] + (model.map { [$0] } ?? []))
            if json {
                printJSON(["out": out, "from": file.adapter.format, "to": target.rawValue, "modules": result.modules,
                           "family": names?.family.rawValue ?? file.adapter.baseModel?.rawValue ?? "unknown"])
                return
            }
            print("converted \(result.modules) modules \(file.adapter.format) → \(target.rawValue) → \(out)")
        }
    }
}
