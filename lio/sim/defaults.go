package sim

import (
	"encoding/json"
	"strconv"
)

// Values as rtslib dumps them on a current kernel (see
// testdata/reference/lio/jbtrystram_targetcli-containers_dfae028_saveconfig.json).

const defaultALUATPG = `{"alua_access_state":0,"alua_access_status":0,"alua_access_type":3,` +
	`"alua_support_active_nonoptimized":1,"alua_support_active_optimized":1,"alua_support_offline":1,` +
	`"alua_support_standby":1,"alua_support_transitioning":1,"alua_support_unavailable":1,` +
	`"alua_write_metadata":0,"implicit_trans_secs":0,"name":"default_tg_pt_gp","nonop_delay_msecs":100,` +
	`"preferred":0,"tg_pt_gp_id":0,"trans_delay_msecs":0}`

var fileioAttrNames = []struct {
	name string
	val  int
}{
	{"alua_support", 1}, {"block_size", 512}, {"emulate_3pc", 1}, {"emulate_caw", 1}, {"emulate_dpo", 1},
	{"emulate_fua_read", 1}, {"emulate_fua_write", 1},
	// targetcli's export_backstore_name_as_model (default true) sets it to 1.
	{"emulate_model_alias", 1},
	// No emulate_rsoc: the 6.1 kernel (Debian 12) has none.
	{"emulate_pr", 1}, {"emulate_rest_reord", 0}, {"emulate_tas", 1}, {"emulate_tpu", 0},
	{"emulate_tpws", 0}, {"emulate_ua_intlck_ctrl", 0},
	{"emulate_write_cache", -1}, // 1 with write_back, else 0
	{"enforce_pr_isids", 1}, {"force_pr_aptpl", 0}, {"is_nonrot", 0}, {"max_unmap_block_desc_count", 1},
	{"max_unmap_lba_count", 8192}, {"max_write_same_len", 4096}, {"optimal_sectors", 16384}, {"pgr_support", 1},
	{"pi_prot_format", 0}, {"pi_prot_type", 0}, {"pi_prot_verify", 0}, {"queue_depth", 128},
	{"unmap_granularity", 1}, {"unmap_granularity_alignment", 0}, {"unmap_zeroes_data", 0},
}

func fileioAttributes(writeBack bool) map[string]json.RawMessage {
	m := make(map[string]json.RawMessage, len(fileioAttrNames))
	for _, a := range fileioAttrNames {
		v := a.val
		if v < 0 {
			v = 0
			if writeBack {
				v = 1
			}
		}
		m[a.name] = json.RawMessage(strconv.Itoa(v))
	}
	return m
}

// csmTPGAttributes are the TPG attributes CSM provisions: demo mode
// (generate_node_acls) with write protection, so every initiator sees the
// LUNs read-only.
func csmTPGAttributes() map[string]json.RawMessage {
	attrs := map[string]int{
		"authentication": 0, "cache_dynamic_acls": 1, "default_cmdsn_depth": 64, "default_erl": 0,
		"demo_mode_discovery": 1, "demo_mode_write_protect": 1, "fabric_prot_type": 0,
		"generate_node_acls": 1, "login_keys_workaround": 1, "login_timeout": 15, "netif_timeout": 2,
		"prod_mode_write_protect": 1, "t10_pi": 0, "tpg_enabled_sendtargets": 1,
	}
	m := make(map[string]json.RawMessage, len(attrs))
	for k, v := range attrs {
		m[k] = json.RawMessage(strconv.Itoa(v))
	}
	return m
}

func defaultTPGParameters() map[string]string {
	return map[string]string{
		"AuthMethod": "CHAP,None", "DataDigest": "CRC32C,None", "DataPDUInOrder": "Yes",
		"DataSequenceInOrder": "Yes", "DefaultTime2Retain": "20", "DefaultTime2Wait": "2",
		"ErrorRecoveryLevel": "0", "FirstBurstLength": "65536", "HeaderDigest": "CRC32C,None",
		"IFMarkInt": "Reject", "IFMarker": "No", "ImmediateData": "Yes", "InitialR2T": "Yes",
		"MaxBurstLength": "262144", "MaxConnections": "1", "MaxOutstandingR2T": "1",
		"MaxRecvDataSegmentLength": "8192", "MaxXmitDataSegmentLength": "262144",
		"OFMarkInt": "Reject", "OFMarker": "No", "TargetAlias": "LIO Target",
	}
}

func portal(ip string, port int) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"ip_address": ip, "iser": false, "offload": false, "port": port})
	return b
}
