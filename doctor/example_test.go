package doctor_test

import (
	"os"

	"github.com/sbps-marshal/sbps-marshal/doctor"
)

// A row that is not OK is followed by its fix; the count comes last.
func ExampleWriteTable() {
	doctor.WriteTable(os.Stdout, []doctor.Result{
		{Name: doctor.RowTargetService, Status: doctor.OK, Detail: "target.service is active"},
		{Name: doctor.RowGate, Status: doctor.Warn, Detail: "node ncn-w001 has no iscsi label", Fix: "kubectl label node ncn-w001 iscsi=sbps"},
		{Name: doctor.RowS3, Status: doctor.Fail, Detail: "S3 refused the key", Fix: "put the right KEYID:SECRET into /root/.ims.s3fs"},
	})
	// Output:
	// CHECK           STATUS DETAIL
	// target.service  OK     target.service is active
	// node gate       WARN   node ncn-w001 has no iscsi label
	//                        fix: kubectl label node ncn-w001 iscsi=sbps
	// S3              FAIL   S3 refused the key
	//                        fix: put the right KEYID:SECRET into /root/.ims.s3fs
	//
	// 3 checks: 1 OK, 1 WARN, 1 FAIL
}
