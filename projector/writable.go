package projector

import "github.com/sbps-marshal/sbps-marshal/lio"

// Writable says why tpg would let initiators write to the LUNs the agent
// projects into it, or "" when it write-protects them: the rule MakePlan
// refuses creates by unless ALLOW_WRITABLE_TPG=true (`sbps-marshal doctor`
// judges the node's TPG with it).
func Writable(tpg *lio.TPG) string { return writable(tpg) }
