import Foundation
import Testing
import Tensor
@testable import TorchPickle

/// Files written by the real torch.save, compared with what torch.load returned (expected.json).
@Suite struct FixtureTests {
    static let validFiles = Fixtures.expected.files.keys.sorted()

    @Test(arguments: validFiles)
    func matchesTorchLoad(_ name: String) throws {
        let expected = try #require(Fixtures.expected.files[name])
        let file = try TorchFile(path: Fixtures.path(name))
        try check(file, against: expected, name: name)
        // Torch aligns every record to 64 bytes, so everything it wrote is zero-copy.
        if expected.format == "zip" && name != "unaligned.pt" {
            for key in file.keys { #expect(file.tensor(named: key)!.storage.isMapped, "\(name): \(key) was copied") }
        }
    }

    @Test(arguments: validFiles)
    func sameResultFromMemory(_ name: String) throws {
        let expected = try #require(Fixtures.expected.files[name])
        let file = try TorchFile(bytes: try Fixtures.bytes(name), name: name)
        try check(file, against: expected, name: name)
    }

    private func check(_ file: TorchFile, against expected: Expected.File, name: String) throws {
        switch file.format {
        case .zip(let root):
            #expect(expected.format == "zip")
            #expect(root == expected.root)
        case .legacy:
            #expect(expected.format == "legacy")
        }
        #expect(file.keys == expected.tensors.map(\.key), "\(name): tensor keys")
        var storageOfGroup: [Int: ObjectIdentifier] = [:]
        var groupOfStorage: [ObjectIdentifier: Int] = [:]
        for e in expected.tensors {
            let t = try #require(file.tensor(named: e.key), "\(name): \(e.key) missing")
            #expect(t.dtype.rawValue == e.dtype, "\(name): \(e.key) dtype")
            #expect(t.shape == e.shape, "\(name): \(e.key) shape")
            #expect(t.strides == e.strides, "\(name): \(e.key) strides")
            #expect(t.offset == e.offset, "\(name): \(e.key) storage offset")
            if let values = e.values {
                #expect(t.doubles == values, "\(name): \(e.key) values")
            } else {
                let dense = t.contiguous()
                let crc = dense.withUnsafeBytes { crc32($0) }
                #expect(crc == e.crc32, "\(name): \(e.key) bytes")
                #expect(abs(t.doubles.reduce(0, +) - e.sum!) <= 1e-9 * max(1, abs(e.sum!)), "\(name): \(e.key) sum")
            }
            // Views that share a storage in torch share one Storage here, and only those.
            let id = ObjectIdentifier(t.storage)
            #expect((storageOfGroup[e.storageGroup] ?? id) == id, "\(name): \(e.key) should share a storage")
            #expect((groupOfStorage[id] ?? e.storageGroup) == e.storageGroup, "\(name): \(e.key) should not share a storage")
            storageOfGroup[e.storageGroup] = id
            groupOfStorage[id] = e.storageGroup
        }
        #expect(Set(file.valueKeys) == Set(expected.values.keys), "\(name): value keys")
        for (key, value) in expected.values {
            let actual = try #require(file.values[key], "\(name): value \(key) missing")
            #expect(Tagged(actual) == value, "\(name): value \(key)")
        }
    }

    @Test func a1111Embedding() throws {
        let file = try TorchFile(path: Fixtures.path("embedding_a1111.pt"))
        #expect(file.keys == ["string_to_param.*"])
        let vector = try #require(file.tensor(named: "string_to_param.*"))
        #expect(vector.shape == [2, 768] && vector.dtype == .f32 && vector.storage.isMapped)
        #expect(file.values["string_to_token.*"]?.intValue == 265)
        #expect(file.values["name"]?.stringValue == "my-embedding")
        #expect(file.values["step"]?.intValue == 1234)
        #expect(file.values["sd_checkpoint"]?.stringValue == "a9263745")
        #expect(file.values["sd_checkpoint_name"]?.stringValue == "v1-5-pruned-emaonly")
        // The unflattened object is there too.
        #expect(file.root["string_to_param"]?["*"]?.tensorValue?.shape == [2, 768])
    }

    @Test func parameterDictEmbedding() throws {
        // The original textual-inversion format: string_to_param is an nn.ParameterDict.
        let file = try TorchFile(path: Fixtures.path("embedding_paramdict.pt"))
        #expect(file.keys == ["string_to_token.*", "string_to_param.*"])
        #expect(file.tensor(named: "string_to_param.*")?.shape == [1, 768])
        #expect(file.tensor(named: "string_to_token.*")?.doubles == [265])
        #expect(file.valueKeys.isEmpty)
    }

    @Test func a1111Hypernetwork() throws {
        let file = try TorchFile(path: Fixtures.path("hypernetwork.pt"))
        let dict = try #require(file.root.dictValue)
        for dim in [768, 320, 640, 1280] {
            let pair = try #require(dict[int: dim]?.elements)
            #expect(pair.count == 2)
            let width = dim / 160
            #expect(file.tensor(named: "\(dim).0.linear.0.weight")?.shape == [2 * width, width])
            #expect(file.tensor(named: "\(dim).1.linear.4.bias")?.shape == [width])
        }
        #expect(file.values["layer_structure"]?.elements?.compactMap(\.doubleValue) == [1, 2, 1])
        #expect(file.values["activation_func"]?.stringValue == "relu")
        #expect(file.values["is_layer_norm"]?.boolValue == true)
        #expect(file.values["use_dropout"]?.boolValue == true)
        #expect(file.values["dropout_structure"]?.elements?.compactMap(\.doubleValue) == [0, 0.3, 0])
        #expect(file.values["weight_initialization"]?.stringValue == "Normal")
        #expect(file.values["step"]?.intValue == 2000)
        if case .none? = file.values["optional_info"] {} else { Issue.record("optional_info should be None") }
    }

    @Test func hypernetworkOptimizerFile() throws {
        let file = try TorchFile(path: Fixtures.path("hypernetwork.pt.optim"))
        #expect(file.values["optimizer_name"]?.stringValue == "AdamW")
        #expect(file.values["optimizer_state_dict.param_groups.0.lr"]?.doubleValue == 1e-3)
        #expect(file.tensor(named: "optimizer_state_dict.state.0.exp_avg") != nil)
    }

    @Test func lightningCheckpointKeyedByClass() throws {
        let file = try TorchFile(path: Fixtures.path("checkpoint.ckpt"))
        let callbacks = try #require(file.root["callbacks"]?.dictValue)
        guard case .global(let module, let name) = try #require(callbacks.keys.first) else {
            Issue.record("callbacks key should be a class reference")
            return
        }
        #expect(module == "pytorch_lightning.callbacks.model_checkpoint" && name == "ModelCheckpoint")
        #expect(file.values["global_step"]?.intValue == 470000)
        #expect(file.tensor(named: "state_dict.model.diffusion_model.input_blocks.0.0.weight")?.dtype == .f16)
    }

    @Test func legacyFormat() throws {
        let file = try TorchFile(path: Fixtures.path("legacy.pt"))
        #expect(file.format == .legacy)
        let weight = try #require(file.tensor(named: "weight"))
        let row = try #require(file.tensor(named: "row"))
        #expect(row.storage === weight.storage && row.offset == 4)
        #expect(row.doubles == [1, 1.25, 1.5, 1.75])
    }

    @Test func copiesRecordsThatAreNotAligned() throws {
        // Python's zipfile does not align records: wider dtypes land at odd offsets and are copied.
        let file = try TorchFile(path: Fixtures.path("unaligned.pt"))
        #expect(file.format == .zip(root: "renamed_root"))
        let copied = file.keys.filter { !file.tensor(named: $0)!.storage.isMapped }
        #expect(!copied.isEmpty)
        for key in copied { #expect(file.tensor(named: key)!.dtype.byteSize > 1) }
    }

    @Test func zip64ArchiveIsZeroCopy() throws {
        let file = try TorchFile(path: Fixtures.path("zip64.pt"))
        #expect(file.format == .zip(root: "zip64root"))
        #expect(file.keys.count == 12)
        #expect(file.keys.allSatisfy { file.tensor(named: $0)!.storage.isMapped })
    }

    @Test func protocolFourMatchesProtocolTwo() throws {
        let p2 = try TorchFile(path: Fixtures.path("nested.pt"))
        let p4 = try TorchFile(path: Fixtures.path("nested_p4.pt"))
        #expect(p2.keys == p4.keys)
        #expect(p2.valueKeys == p4.valueKeys)
        for key in p2.valueKeys { #expect(Tagged(p2.values[key]!) == Tagged(p4.values[key]!), "\(key)") }
        for key in p2.keys { #expect(p2.tensor(named: key)!.doubles == p4.tensor(named: key)!.doubles) }
    }

    @Test func tensorsOutliveTheFileObject() throws {
        var tensor: Tensor?
        do {
            let file = try TorchFile(path: Fixtures.path("views.pt"))
            tensor = file.tensor(named: "block")
        }
        #expect(tensor?.doubles == [8, 9, 10, 14, 15, 16])
    }
}
