#include "program_check.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <vector>

#include "error.h"
#include "program_generated.h"  // flatc of ExecuTorch's program.fbs (CMakeLists.txt)

namespace edgeexit {
namespace {

namespace et = executorch_flatbuffer;

constexpr uint64_t kMaxProgramBytes = uint64_t(1) << 30;  // the flatbuffer part (weights live in segments)

[[noreturn]] void bad(const std::string& rel, const std::string& what) {
  throw BundleError(rel + " is not a program ExecuTorch can run safely: " + what, "a damaged or hostile program",
                    "a .pte edgeexit wrote",
                    "the program is damaged or was not written by edgeexit; rebuild the bundle");
}

uint64_t le(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Valid UTF-8 (2- to 4-byte forms, no overlong forms or surrogates): names are logged and put in messages.
bool utf8(const flatbuffers::String* s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s->data());
  const size_t n = s->size();
  for (size_t i = 0; i < n;) {
    const unsigned c = p[i];
    const size_t len = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (len == 0 || i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
    }
    if ((c == 0xE0 && p[i + 1] < 0xA0) || (c == 0xED && p[i + 1] >= 0xA0) || (c == 0xF0 && p[i + 1] < 0x90) ||
        (c == 0xF4 && p[i + 1] >= 0x90)) {
      return false;
    }
    i += len;
  }
  return true;
}

template <typename T>
size_t size_of(const flatbuffers::Vector<T>* v) {
  return v ? v->size() : 0;
}

void check_plan(const std::string& rel, const et::ExecutionPlan* plan, size_t p) {
  if (plan == nullptr || plan->name() == nullptr || !utf8(plan->name())) {
    bad(rel, "execution plan " + std::to_string(p) + " has no UTF-8 name");
  }
  const std::string where = "method " + plan->name()->str();
  const int64_t values = int64_t(size_of(plan->values()));
  const int64_t ops = int64_t(size_of(plan->operators()));
  const int64_t delegates = int64_t(size_of(plan->delegates()));
  auto value = [&](int64_t i, const std::string& what) {
    if (i < 0 || i >= values) {
      bad(rel, where + " " + what + " names value " + std::to_string(i) + " of " + std::to_string(values));
    }
  };
  auto values_in = [&](const flatbuffers::Vector<int32_t>* v, const std::string& what) {
    if (v == nullptr) return;
    for (int32_t i : *v) value(i, what);
  };
  if (plan->values()) {
    for (flatbuffers::uoffset_t i = 0; i < plan->values()->size(); ++i) {
      if (plan->values()->Get(i) == nullptr) bad(rel, where + " value " + std::to_string(i) + " is absent");
    }
  }
  values_in(plan->inputs(), "input");
  values_in(plan->outputs(), "output");
  if (plan->operators()) {
    for (const et::Operator* op : *plan->operators()) {
      if (op == nullptr || op->name() == nullptr || !utf8(op->name()) || (op->overload() && !utf8(op->overload()))) {
        bad(rel, where + " has an operator without a UTF-8 name");
      }
    }
  }
  if (plan->delegates()) {
    for (const et::BackendDelegate* d : *plan->delegates()) {
      if (d == nullptr || d->id() == nullptr || !utf8(d->id()) || d->processed() == nullptr) {
        bad(rel, where + " has a delegate without an id or a payload");
      }
    }
  }
  if (plan->chains() == nullptr) return;
  for (flatbuffers::uoffset_t c = 0; c < plan->chains()->size(); ++c) {
    const et::Chain* chain = plan->chains()->Get(c);
    if (chain == nullptr) bad(rel, where + " chain " + std::to_string(c) + " is absent");
    values_in(chain->inputs(), "chain input");
    values_in(chain->outputs(), "chain output");
    const int64_t count = int64_t(size_of(chain->instructions()));
    for (int64_t n = 0; n < count; ++n) {
      const et::Instruction* ins = chain->instructions()->Get(flatbuffers::uoffset_t(n));
      const std::string at = "instruction " + std::to_string(n);
      if (ins == nullptr || ins->instr_args() == nullptr) bad(rel, where + " " + at + " has no arguments");
      // a kernel or delegate call: its index within the plan's table, its arguments among the plan's values
      auto call = [&](int64_t index, int64_t limit, const char* what, const flatbuffers::Vector<int32_t>* args) {
        if (index < 0 || index >= limit) {
          bad(rel, where + " " + at + " calls " + what + " " + std::to_string(index) + " of " + std::to_string(limit));
        }
        values_in(args, at + " argument");
      };
      switch (ins->instr_args_type()) {
        case et::InstructionArguments_KernelCall: {
          const auto* k = ins->instr_args_as_KernelCall();
          call(k->op_index(), ops, "operator", k->args());
          break;
        }
        case et::InstructionArguments_DelegateCall: {
          const auto* d = ins->instr_args_as_DelegateCall();
          call(d->delegate_index(), delegates, "delegate", d->args());
          break;
        }
        case et::InstructionArguments_MoveCall: {
          const auto* m = ins->instr_args_as_MoveCall();
          value(m->move_from(), at + " move source");
          value(m->move_to(), at + " move target");
          break;
        }
        case et::InstructionArguments_JumpFalseCall: {
          const auto* j = ins->instr_args_as_JumpFalseCall();
          value(j->cond_value_index(), at + " condition");
          if (j->destination_instruction() < 0 || j->destination_instruction() >= count) {
            bad(rel, where + " " + at + " jumps to instruction " + std::to_string(j->destination_instruction()));
          }
          break;
        }
        case et::InstructionArguments_FreeCall:
          value(ins->instr_args_as_FreeCall()->value_index(), at + " free");
          break;
        default:
          bad(rel, where + " " + at + " has an unknown kind");
      }
    }
  }
}

}  // namespace

void check_program(const std::string& path, const std::string& rel) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) bad(rel, "it cannot be read");
  const uint64_t file_size = uint64_t(in.tellg());
  uint8_t head[32] = {};
  in.seekg(0);
  in.read(reinterpret_cast<char*>(head), std::streamsize(std::min<uint64_t>(file_size, sizeof(head))));
  if (file_size < 8 || std::memcmp(head + 4, "ET12", 4) != 0) bad(rel, "no ExecuTorch identifier ET12");
  uint64_t program_size = file_size;
  // The extended header (after the flatbuffer's root offset and identifier): "eh00", its length, the size of the
  // flatbuffer part and where the segments start.
  if (file_size >= 32 && std::memcmp(head + 8, "eh00", 4) == 0) {
    program_size = le(head + 16, 8);
    const uint64_t segment_base = le(head + 24, 8);
    if (program_size < 8 || program_size > file_size || segment_base > file_size) {
      bad(rel, "its header states sizes beyond the file (" + std::to_string(program_size) + ", " +
                   std::to_string(segment_base) + " of " + std::to_string(file_size) + " bytes)");
    }
  }
  if (program_size > kMaxProgramBytes) bad(rel, "its flatbuffer part is over 1 GiB");
  std::vector<uint8_t> data(static_cast<size_t>(program_size));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(data.data()), std::streamsize(data.size()));
  if (!in) bad(rel, "it is shorter than its header says");
  flatbuffers::Verifier verifier(data.data(), data.size());
  if (!et::VerifyProgramBuffer(verifier)) bad(rel, "flatbuffers' verifier refuses it (truncated or damaged)");
  const et::Program* program = et::GetProgram(data.data());
  if (program->execution_plan() == nullptr) bad(rel, "it has no execution plan");
  for (flatbuffers::uoffset_t p = 0; p < program->execution_plan()->size(); ++p) {
    check_plan(rel, program->execution_plan()->Get(p), p);
  }
}

}  // namespace edgeexit
