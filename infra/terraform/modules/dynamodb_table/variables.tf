variable "name" {
  description = "Table name."
  type        = string
}

variable "hash_key" {
  description = "Partition key: attribute name and type (S, N or B)."
  type = object({
    name = string
    type = string
  })
}

variable "range_key" {
  description = "Sort key, or null."
  type = object({
    name = string
    type = string
  })
  default = null
}

variable "ttl_attribute" {
  description = "Attribute holding the expiry time (epoch seconds) that DynamoDB's TTL deletes by, or null for no TTL."
  type        = string
  default     = null
}

variable "global_secondary_indexes" {
  description = "Global secondary indexes: name, keys and projection (ALL, KEYS_ONLY)."
  type = list(object({
    name = string
    hash_key = object({
      name = string
      type = string
    })
    range_key = optional(object({
      name = string
      type = string
    }))
    projection = string
  }))
  default = []
}

variable "kms_key_arn" {
  description = "ARN of the customer managed key that encrypts the table."
  type        = string
}

variable "deletion_protection" {
  description = "Refuse to delete the table (turn off deliberately before a destroy)."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags for the table."
  type        = map(string)
  default     = {}
}
