// A .pte program checked before ExecuTorch reads it, for what ExecuTorch's own InternalConsistency verification
// leaves unchecked and then trusts: flipped bytes in a re-sealed bundle made ExecuTorch 1.5.1 call through an
// operator index out of range (it logs "Op index N out of range" and executes anyway: SIGSEGV) and read a delegate
// whose id string is absent (strlen(0x4): SIGSEGV). Here: flatbuffers' verifier over the program (the extended
// header's program_size, inside the file), then every index an instruction, a chain or a plan holds in range, and
// every name ExecuTorch dereferences present.
#pragma once

#include <string>

namespace edgeexit {

// Throws edgeexit::Error (EE_ERR_BUNDLE) naming the method and what is wrong. `rel` names the file in messages.
void check_program(const std::string& path, const std::string& rel);

}  // namespace edgeexit
