# Remote state on S3 with a DynamoDB lock table, both made by ../bootstrap. The settings are given at init
# (partial configuration), so one copy of this code serves several environments:
#
#   terraform init -backend-config=backend.hcl
#
# with backend.hcl (see backend.hcl.example; not committed):
#
#   bucket         = "<state bucket from bootstrap>"
#   key            = "eventfleet/<environment>/terraform.tfstate"
#   region         = "<region of the bucket>"
#   dynamodb_table = "<lock table from bootstrap>"
#   encrypt        = true
#   kms_key_id     = "<state key ARN from bootstrap>"
terraform {
  backend "s3" {}
}
